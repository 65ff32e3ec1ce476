"""Tests for multidiff.nn.unet: shapes at odd sizes, conditioning contracts, video factorisation, I/O."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from multidiff.nn.io import config_from_dict, config_to_dict
from multidiff.nn.unet import (
    UNET_PRESETS,
    UNet,
    UNetConfig,
    Upsample,
    nearest_conv_to_transposed,
    unet_from_preset,
)

TINY = dict(channels=(16, 32), num_res_blocks=1, attention_levels=(1,), head_dim=8, norm_groups=8)


def _cfg(**kw: object) -> UNetConfig:
    return UNetConfig(**{**TINY, **kw})  # type: ignore[arg-type]


def _perturb(model: torch.nn.Module, seed: int = 0, skip: tuple[str, ...] = ()) -> torch.nn.Module:
    """Give every all-zero parameter (zero-initialised output layers, biases) small random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in skip):
                continue
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _model(seed: int = 0, **kw: object) -> UNet:
    torch.manual_seed(seed)
    return _perturb(UNet(_cfg(**kw)), seed).eval()  # type: ignore[return-value]


def _noise(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


C_NOISE = torch.tensor([-1.3, 250.0])


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "H", "W", "channels"),
    [(1, None, 80, 37, (16, 32)), (4, 8, 30, 34, (16, 32, 32)), (3, None, 7, 5, (16, 16, 32, 32))],
)
def test_2d_shapes_at_odd_sizes(in_ch: int, out_ch: int | None, H: int, W: int, channels: tuple) -> None:
    model = _model(in_channels=in_ch, out_channels=out_ch, channels=channels, attention_levels=(1,))
    x = _noise(2, in_ch, H, W)
    out = model(x, C_NOISE)
    assert out.shape == (2, out_ch or in_ch, H, W)
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_zero_init_output_and_padding_semantics() -> None:
    torch.manual_seed(0)
    model = UNet(_cfg(in_channels=1)).eval()
    x = _noise(2, 1, 9, 11)
    assert torch.equal(model(x, C_NOISE), torch.zeros(2, 1, 9, 11))  # zero-initialised output conv
    _perturb(model)
    # Inside, sizes are zero-padded bottom/right to a multiple of 2**(levels-1) and cropped back.
    padded = F.pad(x, (0, 1, 0, 1))  # (2, 1, 10, 12)
    torch.testing.assert_close(model(x, C_NOISE), model(padded, C_NOISE)[:, :, :9, :11])


def test_upsample_starts_as_nearest_then_conv3x3() -> None:
    """The 4x4 stride-2 transposed conv equals nearest x2 + the 3x3 conv it was derived from, borders too."""
    torch.manual_seed(3)
    up = Upsample(6).double()
    conv3 = torch.nn.Conv2d(6, 6, 3, padding=1).double()
    with torch.no_grad():
        up.conv.weight.copy_(nearest_conv_to_transposed(conv3.weight))
        up.conv.bias.copy_(conv3.bias)
    x = _noise(2, 6, 5, 7).double()
    ref = conv3(F.interpolate(x, scale_factor=2, mode="nearest"))  # (2, 6, 10, 14)
    torch.testing.assert_close(up(x), ref, rtol=1e-12, atol=1e-12)
    # The default initialisation is such a pair too: along each axis, both output phases sum the same
    # three taps (taps 0 + 2 and 1 + 3), so a constant input gives a constant output away from borders.
    w = Upsample(4).conv.weight.detach()  # (C_in, C_out, 4, 4)
    torch.testing.assert_close(w[:, :, 0] + w[:, :, 2], w[:, :, 1] + w[:, :, 3])
    torch.testing.assert_close(w[..., 0] + w[..., 2], w[..., 1] + w[..., 3])


def test_video_shapes_any_frame_count() -> None:
    model = _model(in_channels=4, video=True, context_dim=6)
    for frames in (1, 5):
        x = _noise(2, 4, frames, 14, 18)
        out = model(x, C_NOISE, context=_noise(2, 3, 6))
        assert out.shape == (2, 4, frames, 14, 18)
        assert torch.isfinite(out).all()


def test_labels_and_null_label() -> None:
    model = _model(in_channels=2, num_classes=3)
    assert model.null_label == 3
    x = _noise(2, 2, 8, 8)
    null = model(x, C_NOISE, labels=torch.tensor([3, 3]))
    torch.testing.assert_close(model(x, C_NOISE), null)  # labels=None means the null label
    out = model(x, C_NOISE, labels=torch.tensor([0, 2]))
    assert (out - null).abs().amax() > 1e-4
    # Each sample only sees its own label.
    mixed = model(x, C_NOISE, labels=torch.tensor([0, 3]))
    torch.testing.assert_close(mixed[0], out[0])
    torch.testing.assert_close(mixed[1], null[1])
    with pytest.raises(ValueError, match="num_classes"):
        _model(in_channels=2)(x, C_NOISE, labels=torch.tensor([0, 1]))


@pytest.mark.parametrize("video", [False, True])
def test_masked_context_tokens_do_not_change_output(video: bool) -> None:
    model = _model(in_channels=2, context_dim=5, video=video)
    shape = (2, 2, 3, 8, 12) if video else (2, 2, 8, 12)
    x = _noise(*shape)
    ctx = _noise(2, 6, 5, seed=2)
    mask = torch.tensor([[True, True, False, True, False, False], [True, False, True, True, True, True]])
    out = model(x, C_NOISE, context=ctx, context_mask=mask)
    junk = torch.where(mask[..., None], ctx, 100 * _noise(2, 6, 5, seed=3))
    torch.testing.assert_close(model(x, C_NOISE, context=junk, context_mask=mask), out)
    # A kept token does matter, and a full mask equals no mask.
    changed = ctx.clone()
    changed[:, 0] += 1.0
    assert (model(x, C_NOISE, context=changed, context_mask=mask) - out).abs().amax() > 1e-4
    full = torch.ones(2, 6, dtype=torch.bool)
    torch.testing.assert_close(
        model(x, C_NOISE, context=ctx, context_mask=full), model(x, C_NOISE, context=ctx)
    )
    assert (model(x, C_NOISE) - out).abs().amax() > 1e-4  # context=None skips cross-attention


def test_cond_channels() -> None:
    model = _model(in_channels=1, cond_channels=2)
    x = _noise(2, 1, 12, 9)
    cond = _noise(2, 2, 12, 9, seed=4)
    out = model(x, C_NOISE, cond_channels=cond)
    assert out.shape == x.shape
    assert (model(x, C_NOISE, cond_channels=cond + 1) - out).abs().amax() > 1e-4
    with pytest.raises(ValueError, match="cond_channels"):
        model(x, C_NOISE)
    with pytest.raises(ValueError, match="cond_channels"):
        model(x, C_NOISE, cond_channels=cond[:, :1])
    with pytest.raises(ValueError, match="cond_channels"):
        _model(in_channels=1)(x, C_NOISE, cond_channels=cond)


def test_video_with_zero_temporal_layers_is_the_per_frame_image_model() -> None:
    """Ho et al. 2022: temporal layers start at zero, so the video U-Net is the image U-Net per frame."""
    torch.manual_seed(0)
    video = _perturb(UNet(_cfg(in_channels=3, video=True, context_dim=4)), skip=(".tconv.", ".tattn.")).eval()
    image = UNet(_cfg(in_channels=3, context_dim=4)).eval()
    spatial = {k: v for k, v in video.state_dict().items() if ".tconv." not in k and ".tattn." not in k}
    image.load_state_dict(spatial, strict=True)
    x = _noise(2, 3, 4, 10, 6)
    ctx = _noise(2, 5, 4, seed=5)
    out = video(x, C_NOISE, context=ctx)  # (B, C, F, H, W)
    frames = x.transpose(1, 2).reshape(8, 3, 10, 6)
    per_frame = image(frames, C_NOISE.repeat_interleave(4), context=ctx.repeat_interleave(4, dim=0))
    torch.testing.assert_close(out, per_frame.reshape(2, 4, 3, 10, 6).transpose(1, 2))


def test_frames_interact_only_in_video_models() -> None:
    x = _noise(2, 2, 4, 8, 8)
    y = x.clone()
    y[:, :, 0] += 1.0  # change frame 0 only
    video = _model(in_channels=2, video=True)
    diff = (video(y, C_NOISE) - video(x, C_NOISE)).abs()
    assert diff[:, :, 3].amax() > 1e-4  # the last frame sees the first
    image = _model(in_channels=2)
    a = image(x.transpose(1, 2).reshape(8, 2, 8, 8), C_NOISE.repeat_interleave(4))
    b = image(y.transpose(1, 2).reshape(8, 2, 8, 8), C_NOISE.repeat_interleave(4))
    torch.testing.assert_close(a.view(2, 4, 2, 8, 8)[:, 1:], b.view(2, 4, 2, 8, 8)[:, 1:])


def test_channels_last_video_model_gives_the_same_output_and_gradients() -> None:
    """The memory format is a speed setting only: a channels-last video U-Net (whose temporal layers
    then attend and convolve without copies) computes what the NCHW one does."""
    x = _noise(2, 2, 4, 8, 8)
    model = _model(in_channels=2, video=True).train()
    cl = _model(in_channels=2, video=True).train().to(memory_format=torch.channels_last)
    outs = []
    for m in (model, cl):
        out = m(x, C_NOISE)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(model.named_parameters(), cl.parameters()):  # to float32 rounding of the sums
        assert (b.grad - a.grad).abs().max() <= 1e-5 * a.grad.abs().max() + 1e-7, name


def test_finite_under_bf16_autocast() -> None:
    model = _model(in_channels=2, video=True, context_dim=4, num_classes=2)
    x = _noise(2, 2, 3, 6, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, C_NOISE, labels=torch.tensor([0, 2]), context=_noise(2, 3, 4))
    assert out.shape == x.shape and torch.isfinite(out).all()
    ref = model(x, C_NOISE, labels=torch.tensor([0, 2]), context=_noise(2, 3, 4))
    assert ((out.float() - ref).norm() / ref.norm()) < 0.05


def test_gradients_reach_every_parameter() -> None:
    model = _model(in_channels=2, video=True, context_dim=4, num_classes=2, cond_channels=1, mlp_ratio=2.0)
    model.train()
    x = _noise(2, 2, 3, 6, 10)
    out = model(
        x,
        C_NOISE,
        labels=torch.tensor([0, 1]),
        context=_noise(2, 3, 4),
        cond_channels=_noise(2, 1, 3, 6, 10, seed=7),
    )
    out.square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_gradient_checkpointing_matches() -> None:
    x = _noise(2, 2, 3, 8, 8)
    grads = []
    for ckpt in (False, True):
        model = _model(in_channels=2, video=True, grad_checkpointing=ckpt).train()
        model(x, C_NOISE).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_save_load_round_trip(tmp_path) -> None:
    model = _model(in_channels=2, num_classes=3, context_dim=4, video=True, temporal_attention_levels=(0, 1))
    model.save_pretrained(tmp_path / "unet")
    loaded = UNet.from_pretrained(tmp_path / "unet")
    assert loaded.config == model.config
    x, ctx = _noise(2, 2, 2, 8, 8), _noise(2, 3, 4)
    torch.testing.assert_close(
        loaded.eval()(x, C_NOISE, labels=torch.tensor([1, 3]), context=ctx),
        model(x, C_NOISE, labels=torch.tensor([1, 3]), context=ctx),
        rtol=0,
        atol=0,
    )
    assert config_from_dict(UNetConfig, config_to_dict(model.config)) == model.config


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="norm_groups"):
        _cfg(channels=(16, 20))
    with pytest.raises(ValueError, match="attention_levels"):
        _cfg(attention_levels=(2,))
    with pytest.raises(ValueError, match="head_dim"):
        _cfg(head_dim=12)
    with pytest.raises(ValueError, match="num_res_blocks"):
        _cfg(num_res_blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="video"):
        _cfg(temporal_attention_levels=(0,))
    with pytest.raises(ValueError, match="temporal_kernel"):
        _cfg(video=True, temporal_kernel=2)
    assert _cfg(num_res_blocks=2).blocks_per_level == (2, 2)
    assert _cfg(num_res_blocks=[1, 3]).num_res_blocks == (1, 3)
    with pytest.raises(ValueError, match="4-D input"):
        _model(in_channels=2)(_noise(1, 2, 2, 4, 4), C_NOISE[:1])
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        unet_from_preset("nope")


def test_presets_parameter_counts() -> None:
    counts = {}
    for name in ("mel-75M", "video-B"):
        with torch.device("meta"):
            model = UNet(UNET_PRESETS[name])
        counts[name] = sum(p.numel() for p in model.parameters())
    assert 70e6 < counts["mel-75M"] < 80e6
    assert UNET_PRESETS["video-B"].channels == (128, 256, 512, 512)
    assert dataclasses.replace(UNET_PRESETS["mel-75M"], num_classes=4).num_classes == 4


@pytest.mark.slow
def test_compile_smoke() -> None:
    model = _model(in_channels=2, video=True, context_dim=4)
    x = _noise(2, 2, 3, 8, 12)
    ctx = _noise(2, 3, 4)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x, C_NOISE, context=ctx), model(x, C_NOISE, context=ctx))


def test_compile_forces_inductor_layout_optimisation(monkeypatch: pytest.MonkeyPatch) -> None:
    """UNet.compile hands Inductor ``force_layout_optimization`` with the mode's own options (torch.compile
    refuses mode and options together) and the compiled U-Net computes what the eager one does. Inductor
    would otherwise turn channels-last off for a U-Net: its decoder's skip concatenations give
    convolutions twice as many input as output channels."""
    import torch._inductor.config as inductor_config
    from torch._inductor.graph import GraphLowering

    decide = GraphLowering.decide_layout_opt
    seen: list[tuple[bool, bool]] = []

    def spy(gm: torch.fx.GraphModule, *, is_inference: bool) -> bool:
        seen.append((inductor_config.force_layout_optimization, inductor_config.max_autotune))
        return decide(gm, is_inference=is_inference)

    monkeypatch.setattr(GraphLowering, "decide_layout_opt", staticmethod(spy))
    monkeypatch.setattr(inductor_config, "force_disable_caches", True)  # a cached graph skips lowering
    model = _model(in_channels=1, channels=(8, 16), attention_levels=())
    x = _noise(2, 1, 8, 8)
    expected = model(x, C_NOISE)
    torch._dynamo.reset()
    model.compile(mode="max-autotune-no-cudagraphs", options={"max_autotune": False})
    torch.testing.assert_close(model(x, C_NOISE), expected, rtol=1e-4, atol=1e-5)
    # forced on; the mode's options taken, and those given win over them
    assert seen and all(s == (True, False) for s in seen), seen
    assert not inductor_config.force_layout_optimization  # the global default untouched
