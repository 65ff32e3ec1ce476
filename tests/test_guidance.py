"""Tests for multidiff.core.guidance: CFG (interval, rescale), autoguidance and inpainting."""

from __future__ import annotations

import pytest
import torch

from multidiff.core.guidance import autoguidance, cfg, inpaint

B, C, H, W = 4, 3, 5, 6
NUM_CLASSES, L, D_CTX = 3, 7, 4


def _bcast(v: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (ref.ndim - 1)))


class FakeDenoiser:
    """A deterministic conditional denoiser that records the batch size of every call.

    x0_hat = x / (1 + σ²) + offset[label] + a·(masked mean of context), a different value per class
    and per context, so conditional and unconditional predictions differ everywhere.
    """

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.offset = torch.randn(NUM_CLASSES + 1, C, H, W, generator=g)  # index NUM_CLASSES = null label
        self.ctx_gain = torch.randn(C, H, W, generator=g)
        self.batches: list[int] = []
        self.seen: dict[str, object] = {}

    def __call__(self, x, sigma, *, labels=None, context=None, context_mask=None, cond_channels=None):
        self.batches.append(x.shape[0])
        self.seen = {
            "labels": labels,
            "context": context,
            "context_mask": context_mask,
            "cond": cond_channels,
        }
        out = x / _bcast(1 + sigma**2, x)
        if labels is not None:
            out = out + self.offset.to(x.device)[labels]
        if context is not None:
            m = context_mask.float()[..., None]  # (B, L, 1)
            pooled = (context * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1.0)  # (B,)
            out = out + _bcast(pooled, x) * self.ctx_gain.to(x.device)
        if cond_channels is not None:
            out = out + cond_channels
        return out


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g) * 3
    sigma = torch.tensor([0.3, 1.0, 2.5, 10.0])
    labels = torch.tensor([0, 1, 2, 1])
    context = torch.randn(B, L, D_CTX, generator=g)
    mask = torch.rand(B, L, generator=g) > 0.3
    return x, sigma, labels, context, mask


def _v(x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """VP v-prediction from x0 in σ-space, written out as in Lin et al. with s = 1/sqrt(1+σ²)."""
    s = _bcast(1 / torch.sqrt(1 + sigma**2), x)
    sig = _bcast(sigma, x)
    n_hat = (x - x0) / sig
    return s * n_hat - s * sig * x0


def test_cfg_endpoints_linearity_and_single_batched_call() -> None:
    den = FakeDenoiser()
    x, sigma, labels, _, _ = _inputs()
    c = den(x, sigma, labels=labels)
    u = den(x, sigma, labels=torch.full_like(labels, NUM_CLASSES))
    assert float((c - u).abs().min()) > 0  # the test cannot pass by conditional == unconditional

    for scale, expected in [(1.0, c), (0.0, u), (0.5, 0.5 * (c + u)), (3.0, u + 3.0 * (c - u))]:
        den.batches.clear()
        out = cfg(den, scale, uncond={"labels": NUM_CLASSES})(x, sigma, labels=labels)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert den.batches == [2 * B]
        assert torch.equal(den.seen["labels"], torch.cat([labels, torch.full_like(labels, NUM_CLASSES)]))

    # A per-sample scale [B] guides each sample with its own weight.
    scale = torch.tensor([0.0, 1.0, 2.0, 4.0])
    out = cfg(den, scale, uncond={"labels": NUM_CLASSES})(x, sigma, labels=labels)
    torch.testing.assert_close(out, u + _bcast(scale, u) * (c - u), rtol=1e-5, atol=1e-5)


def test_cfg_context_uncond_and_repeated_kwargs() -> None:
    den = FakeDenoiser()
    x, sigma, labels, context, mask = _inputs()
    extra = torch.randn(B, C, H, W)
    null_ctx = {"context": torch.zeros(1, L, D_CTX), "context_mask": torch.zeros(1, L, dtype=torch.bool)}
    cond = {"labels": labels, "context": context, "context_mask": mask, "cond_channels": extra}
    c = den(x, sigma, **cond)
    u = den(
        x,
        sigma,
        labels=labels,
        context=torch.zeros_like(context),
        context_mask=torch.zeros_like(mask),
        cond_channels=extra,
    )
    den.batches.clear()
    out = cfg(den, 2.0, uncond=null_ctx)(x, sigma, **cond)
    torch.testing.assert_close(out, u + 2.0 * (c - u), rtol=1e-5, atol=1e-5)
    assert den.batches == [2 * B]
    assert torch.equal(den.seen["labels"], torch.cat([labels, labels]))  # not in uncond: repeated
    assert torch.equal(den.seen["cond"], torch.cat([extra, extra]))
    assert den.seen["context_mask"].dtype == torch.bool
    assert not bool(den.seen["context_mask"][B:].any())

    with pytest.raises(ValueError, match="context_mask"):
        cfg(den, 2.0, uncond=null_ctx)(x, sigma, labels=labels, context=context)
    with pytest.raises(ValueError, match="broadcast"):
        bad = {"context": torch.zeros(1, L + 1, D_CTX)}
        cfg(den, 2.0, uncond=bad)(x, sigma, context=context, context_mask=mask)
    with pytest.raises(ValueError, match="rescale"):
        cfg(den, 2.0, rescale=1.5)
    with pytest.raises(ValueError, match="interval"):
        cfg(den, 2.0, interval=(2.0, 1.0))


def test_cfg_interval_switches_per_sample() -> None:
    den = FakeDenoiser()
    x, _, labels, _, _ = _inputs()
    sigma = torch.tensor([0.5, 1.0, 5.0, 20.0])  # interval (0.5, 5.0]: only samples 1 and 2 inside
    c = den(x, sigma, labels=labels)
    u = den(x, sigma, labels=torch.full_like(labels, NUM_CLASSES))
    den.batches.clear()
    out = cfg(den, 3.0, uncond={"labels": NUM_CLASSES}, interval=(0.5, 5.0))(x, sigma, labels=labels)
    assert den.batches == [2 * B]
    assert torch.equal(out[0], c[0]) and torch.equal(out[3], c[3])  # outside: exactly conditional
    torch.testing.assert_close(out[1:3], (u + 3.0 * (c - u))[1:3], rtol=1e-5, atol=1e-5)
    assert float((out[1:3] - c[1:3]).abs().max()) > 0.1


def test_cfg_has_no_host_device_sync() -> None:
    # Meta tensors have no values: any .item(), bool() or Python `if` on a tensor would raise.
    den = FakeDenoiser()
    den.offset, den.ctx_gain = den.offset.to("meta"), den.ctx_gain.to("meta")
    x = torch.empty(B, C, H, W, device="meta")
    sigma = torch.empty(B, device="meta")
    labels = torch.empty(B, dtype=torch.long, device="meta")
    scale = torch.empty(B, device="meta")
    guided = cfg(den, scale, uncond={"labels": NUM_CLASSES}, interval=(0.2, 5.0), rescale=0.7)
    out = guided(x, sigma, labels=labels)
    assert out.shape == x.shape and out.device.type == "meta"


def test_cfg_rescale_in_v_space() -> None:
    den = FakeDenoiser()
    x, sigma, labels, _, _ = _inputs()
    kwargs = {"uncond": {"labels": NUM_CLASSES}}
    c = den(x, sigma, labels=labels)
    plain = cfg(den, 4.0, **kwargs)(x, sigma, labels=labels)
    torch.testing.assert_close(cfg(den, 4.0, rescale=0.0, **kwargs)(x, sigma, labels=labels), plain)

    full = cfg(den, 4.0, rescale=1.0, **kwargs)(x, sigma, labels=labels)
    dims = (1, 2, 3)
    std_full = _v(x, sigma, full).std(dim=dims)
    std_cond = _v(x, sigma, c).std(dim=dims)
    std_plain = _v(x, sigma, plain).std(dim=dims)
    torch.testing.assert_close(std_full, std_cond, rtol=1e-4, atol=1e-5)
    assert bool((std_plain > 1.2 * std_cond).all())  # guidance did inflate the std before rescaling
    # phi = 1 rescales v_g by a per-sample constant: the direction of v is kept.
    cos = torch.nn.functional.cosine_similarity(_v(x, sigma, full).flatten(1), _v(x, sigma, plain).flatten(1))
    torch.testing.assert_close(cos, torch.ones(B), rtol=0, atol=1e-5)

    # phi mixes linearly in v-space.
    half = cfg(den, 4.0, rescale=0.5, **kwargs)(x, sigma, labels=labels)
    mixed = 0.5 * (_v(x, sigma, full) + _v(x, sigma, plain))
    torch.testing.assert_close(_v(x, sigma, half), mixed, rtol=1e-4, atol=1e-4)

    # At scale 1 the guided prediction is the conditional one, so rescaling changes nothing.
    one = cfg(den, 1.0, rescale=1.0, **kwargs)(x, sigma, labels=labels)
    torch.testing.assert_close(one, c, rtol=1e-5, atol=1e-5)

    # Finite at σ = 0, where the v conversion itself would divide by zero.
    zero = cfg(den, 4.0, rescale=0.7, **kwargs)(x, torch.zeros(B), labels=labels)
    assert bool(torch.isfinite(zero).all())


def test_autoguidance() -> None:
    good, weak = FakeDenoiser(seed=0), FakeDenoiser(seed=1)
    x, sigma, labels, _, _ = _inputs()
    d, dw = good(x, sigma, labels=labels), weak(x, sigma, labels=labels)
    torch.testing.assert_close(autoguidance(good, weak, 1.0)(x, sigma, labels=labels), d)
    torch.testing.assert_close(autoguidance(good, weak, 0.0)(x, sigma, labels=labels), dw)
    torch.testing.assert_close(
        autoguidance(good, weak, 2.5)(x, sigma, labels=labels), dw + 2.5 * (d - dw), rtol=1e-5, atol=1e-5
    )
    scale = torch.tensor([1.0, 0.0, 2.0, 3.0])
    torch.testing.assert_close(
        autoguidance(good, weak, scale)(x, sigma, labels=labels),
        dw + _bcast(scale, d) * (d - dw),
        rtol=1e-5,
        atol=1e-5,
    )


def test_inpaint_replaces_known_region() -> None:
    den = FakeDenoiser()
    x, sigma, labels, _, _ = _inputs()
    known = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 1, H, W)
    mask[..., :, : W // 2] = 1.0  # left half known (e.g. the first frames of a continuation)
    out = inpaint(den, known, mask)(x, sigma, labels=labels)
    d = den(x, sigma, labels=labels)
    keep = mask.expand_as(x).bool()
    assert torch.equal(out[keep], known[keep])
    assert torch.equal(out[~keep], d[~keep])
    # A soft mask blends.
    soft = torch.full((1, 1, 1, 1), 0.25)
    torch.testing.assert_close(inpaint(den, known, soft)(x, sigma, labels=labels), 0.25 * known + 0.75 * d)
    with pytest.raises(ValueError, match="mask"):
        inpaint(den, known, keep)


def test_inpaint_euler_loop_ends_on_known_data() -> None:
    den = FakeDenoiser()
    g = torch.Generator().manual_seed(3)
    known = torch.randn(B, C, H, W, generator=g)
    mask = torch.zeros(1, 1, H, W)
    mask[..., : H // 2, :] = 1.0
    labels = torch.tensor([0, 1, 2, 0])
    guided = inpaint(cfg(den, 2.0, uncond={"labels": NUM_CLASSES}), known, mask)
    sigmas = torch.cat([torch.logspace(torch.log10(torch.tensor(80.0)), -2.5, 12), torch.zeros(1)])
    x = torch.randn(B, C, H, W, generator=g) * sigmas[0]
    keep = mask.expand_as(x).bool()
    noise_dir = (x - known)[keep] / sigmas[0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = guided(x, s.expand(B), labels=labels)
        x = d + (s_next / s) * (x - d)  # Euler step of the probability-flow ODE in σ
        if s_next > 0:  # known region stays known + σ·(its initial noise): no fresh noise is drawn
            torch.testing.assert_close((x - known)[keep] / s_next, noise_dir, rtol=1e-4, atol=1e-4)
    assert torch.equal(x[keep], known[keep])
    assert bool(torch.isfinite(x).all()) and float((x[~keep] - known[~keep]).abs().max()) > 0.1
