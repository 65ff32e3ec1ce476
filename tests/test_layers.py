"""Tests of multidiff.nn.layers against analytic answers and direct computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multidiff.nn.layers import (
    AdaLNModulation,
    Attention,
    LabelEmbedding,
    Mlp,
    NoiseEmbedding,
    RMSNorm,
    RotaryEmbedding,
    apply_rotary,
    axis_split,
    grid_positions,
    modulate,
    rotary_tables,
    sincos_embedding,
    sinusoidal_embedding,
)


def test_rmsnorm_matches_formula() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 5, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_modulate_and_adaln_zero() -> None:
    x, shift, scale = torch.randn(2, 4, 6), torch.randn(2, 1, 6), torch.randn(2, 1, 6)
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + scale) + shift)
    ada = AdaLNModulation(6, 10, 3)
    outs = ada(torch.randn(2, 10))
    assert len(outs) == 3 and all(o.shape == (2, 1, 6) for o in outs)
    assert all(torch.count_nonzero(o) == 0 for o in outs)  # adaLN-Zero starts at zero


def test_sinusoidal_embedding_analytic() -> None:
    v = torch.tensor([0.0, 1.5, -2.25, 999.0])
    emb = sinusoidal_embedding(v, 8)
    k = torch.arange(4, dtype=torch.float64)
    freqs = torch.exp(-math.log(10000.0) * k / 4)
    args = v.double()[:, None] * freqs
    torch.testing.assert_close(emb.double(), torch.cat([args.cos(), args.sin()], -1), atol=1e-5, rtol=0)
    # freq_shift=1 reproduces diffusers' Timesteps(flip_sin_to_cos=True, downscale_freq_shift=1) spacing.
    emb1 = sinusoidal_embedding(v, 8, freq_shift=1.0)
    freqs1 = torch.exp(-math.log(10000.0) * k / 3)
    args1 = v.double()[:, None] * freqs1
    torch.testing.assert_close(emb1.double(), torch.cat([args1.cos(), args1.sin()], -1), atol=1e-5, rtol=0)


def test_noise_embedding_distinguishes_real_values_and_ignores_autocast_precision() -> None:
    torch.manual_seed(0)
    emb = NoiseEmbedding(16)
    c = torch.tensor([-1.2, -1.19, 0.0, 3.7])  # EDM-style ln(sigma)/4 values, close together
    out = emb(c)
    assert out.shape == (4, 16)
    assert (out[0] - out[1]).abs().max() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = emb(c)
    assert torch.isfinite(out_bf16).all()


def test_label_embedding_null_row() -> None:
    emb = LabelEmbedding(5, 4)
    assert emb.null_label == 5
    assert emb.table.weight.shape == (6, 4)
    torch.testing.assert_close(emb(torch.tensor([5]))[0], emb.table.weight[5])


def test_grid_positions_and_axis_split() -> None:
    pos = grid_positions((2, 3))
    assert pos.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert axis_split(64, 3) == (20, 22, 22)
    assert axis_split(64, 2) == (32, 32)
    assert sum(axis_split(1152, 3)) == 1152
    with pytest.raises(ValueError):
        axis_split(7, 1)


def test_sincos_embedding_2d_matches_mae_layout() -> None:
    # MAE/DiT: first half encodes the column (W) coordinate, second half the row (H); each half is
    # [sin(p*w), cos(p*w)] with w_k = 10000^(-k/(D/4)).
    H, W, D = 3, 4, 16
    table = sincos_embedding((H, W), D)
    assert table.shape == (H * W, D)
    k = torch.arange(D // 4, dtype=torch.float64)
    omega = 1.0 / 10000 ** (k / (D // 4))
    for i in range(H):
        for j in range(W):
            row = i * W + j
            col_part = torch.cat([torch.sin(j * omega), torch.cos(j * omega)])
            row_part = torch.cat([torch.sin(i * omega), torch.cos(i * omega)])
            torch.testing.assert_close(
                table[row].double(), torch.cat([col_part, row_part]), atol=1e-6, rtol=0
            )


def test_sincos_embedding_3d_shape_and_distinct_rows() -> None:
    table = sincos_embedding((2, 3, 5), 24)
    assert table.shape == (30, 24)
    assert torch.cdist(table, table).add(torch.eye(30)).min() > 1e-3  # every position distinct


def test_rotary_is_relative_position_encoding() -> None:
    # <R(p) q, R(p') k> depends only on p - p' (Su et al. 2021), per axis for axial RoPE.
    torch.manual_seed(0)
    head_dim = 12
    cos, sin = rotary_tables((4, 5), head_dim)
    q = torch.randn(1, 1, 1, head_dim).expand(1, 1, 20, head_dim)
    k = torch.randn(1, 1, 1, head_dim).expand(1, 1, 20, head_dim)
    qr, kr = apply_rotary(q, cos, sin)[0, 0], apply_rotary(k, cos, sin)[0, 0]
    scores = qr @ kr.T  # (20, 20)

    def idx(i: int, j: int) -> int:
        return i * 5 + j

    torch.testing.assert_close(scores[idx(0, 0), idx(1, 2)], scores[idx(2, 1), idx(3, 3)], atol=1e-5, rtol=0)
    torch.testing.assert_close(scores[idx(3, 4), idx(1, 1)], scores[idx(2, 3), idx(0, 0)], atol=1e-5, rtol=0)
    # Rotation keeps norms.
    torch.testing.assert_close(qr.norm(dim=-1), q[0, 0].norm(dim=-1), atol=1e-5, rtol=0)
    assert not torch.allclose(scores[idx(0, 0), idx(0, 1)], scores[idx(0, 0), idx(1, 0)])


def test_rotary_1d_and_module() -> None:
    cos, sin = rotary_tables((7,), 8)
    assert cos.shape == (7, 4)
    torch.testing.assert_close(cos[3, 0], torch.tensor(math.cos(3.0)))  # k=0: angle = position
    rope = RotaryEmbedding(8, 1)
    torch.testing.assert_close(rope((7,))[1], sin)
    with pytest.raises(ValueError):
        rope((2, 3))


def _reference_attention(
    attn: Attention, x: torch.Tensor, ctx: torch.Tensor | None, mask: torch.Tensor | None
):
    B, L, D = x.shape
    nH, Dh = attn.heads, attn.head_dim
    if ctx is None:
        q, k, v = attn.to_qkv(x).split(D, dim=-1)
    else:
        q = attn.to_q(x)
        k, v = attn.to_kv(ctx).split(D, dim=-1)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, -1, nH, Dh).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    logits = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, L, D)
    return attn.proj(out)


def test_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    attn = Attention(16, 4)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(attn(x), _reference_attention(attn, x, None, None), atol=1e-5, rtol=1e-5)
    cross = Attention(16, 4, context_dim=12)
    ctx = torch.randn(2, 5, 12)
    mask = torch.tensor([[True, False, True, True, False], [False, True, True, True, True]])
    torch.testing.assert_close(
        cross(x, ctx, mask=mask), _reference_attention(cross, x, ctx, mask), atol=1e-5, rtol=1e-5
    )


def test_attention_mask_ignores_masked_keys_and_zeroes_empty_rows() -> None:
    torch.manual_seed(0)
    cross = Attention(16, 2, context_dim=8, qk_norm=True)
    x, ctx = torch.randn(2, 4, 16), torch.randn(2, 6, 8)
    mask = torch.tensor([[True, True, False, True, False, False], [False] * 6])
    out = cross(x, ctx, mask=mask)
    ctx2 = ctx.clone()
    ctx2[~mask] = torch.randn(int((~mask).sum()), 8) * 10
    torch.testing.assert_close(cross(x, ctx2, mask=mask), out)
    assert torch.count_nonzero(out[1]) == 0  # nothing to attend: zero, not NaN


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_across_frames_equals_attention_on_gathered_frames(qk_norm: bool) -> None:
    """across_frames attends over F at each of S positions, as the module does on (B·S, F, D) tokens,
    and a wrapped QKV layer (as LoRA wraps it) takes the gathering path with the same result."""
    torch.manual_seed(0)
    B, Fr, S, D = 2, 5, 6, 16
    attn = Attention(D, 4, qk_norm=qk_norm)
    if qk_norm:
        for norm in (attn.q_norm, attn.k_norm):
            torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    x = torch.randn(B, Fr, S, D)
    rope = rotary_tables((Fr,), D // 4)
    gathered = attn(x.transpose(1, 2).reshape(B * S, Fr, D), rope=rope).view(B, S, Fr, D).transpose(1, 2)
    out = attn.across_frames(x, rope=rope)
    assert out.shape == (B, Fr, S, D)
    torch.testing.assert_close(out, gathered, atol=1e-5, rtol=1e-5)
    # the frames are what is mixed: changing frame 0 at position 0 leaves every other position alone
    x2 = x.clone()
    x2[:, 0, 0] += 1.0
    delta = (attn.across_frames(x2, rope=rope) - out).abs().amax(dim=(0, 3))  # (F, S)
    assert (delta[:, 0] > 1e-4).all() and (delta[:, 1:] == 0).all()

    class Wrapped(nn.Module):  # a QKV layer that is not a plain nn.Linear
        def __init__(self, inner: nn.Linear) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.inner(t)

    attn.fused = False
    torch.testing.assert_close(attn.across_frames(x, rope=rope), gathered, atol=1e-5, rtol=1e-5)
    attn.fused = True
    attn.to_qkv = Wrapped(attn.to_qkv)  # type: ignore[assignment]
    torch.testing.assert_close(attn.across_frames(x, rope=rope), gathered, atol=1e-5, rtol=1e-5)


def test_attention_rope_and_backends_and_errors() -> None:
    torch.manual_seed(0)
    attn = Attention(16, 2, qk_norm=True, backends=("flash", "efficient", "math"))
    x = torch.randn(2, 6, 16)
    rope = rotary_tables((2, 3), 8)
    out = attn(x, rope=rope)
    assert out.shape == (2, 6, 16) and torch.isfinite(out).all()
    assert not torch.allclose(out, attn(x))  # positions matter with RoPE
    with pytest.raises(ValueError):
        Attention(16, 2, backends=("nope",))
    with pytest.raises(ValueError):
        Attention(15, 2)
    with pytest.raises(ValueError):
        attn(x, torch.randn(2, 3, 16))


def test_mlp_tanh_gelu() -> None:
    torch.manual_seed(0)
    mlp = Mlp(4, 8, out_dim=3)
    x = torch.randn(2, 4)
    expected = mlp.fc2(F.gelu(mlp.fc1(x), approximate="tanh"))
    torch.testing.assert_close(mlp(x), expected)
    with pytest.raises(ValueError):
        Mlp(4, 8, approximate="relu")


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_norms_run_in_the_autocast_dtype_with_float32_statistics(kind):
    """Under bf16 autocast the U-Net norms return bf16 (no float32 round trip) and agree with the float32
    norm to bf16 rounding; outside autocast they are exactly torch's norms."""
    from multidiff.nn.layers import GroupNorm, LayerNorm

    torch.manual_seed(0)
    if kind == "group":
        ours, ref = GroupNorm(4, 16), nn.GroupNorm(4, 16)
        x = torch.randn(3, 16, 5, 7) * 3 + 2
    else:
        ours, ref = LayerNorm(16), nn.LayerNorm(16)
        x = torch.randn(3, 5, 16) * 3 + 2
    with torch.no_grad():
        for p in (*ours.parameters(), *ref.parameters()):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
    assert torch.equal(ours(x), ref(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ours(x)
        via_torch = ref(x)
    assert got.dtype == torch.bfloat16 and via_torch.dtype == torch.float32
    err = (got.float() - ref(x)).norm() / ref(x).norm()
    assert 0 < err < 1e-2


# ---------------------------------------------------------------------------------------------------
# GroupNorm from per-channel statistics (what torch.compile runs)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 8, 5, 6), (3, 12, 7), (2, 8, 3, 4, 5), (3, 8)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_by_channel_equals_group_norm_with_its_gradients(shape, affine) -> None:
    """Per-channel statistics combined per group (law of total variance) are GroupNorm's, in either layout;
    so are the gradients of the input, weight and bias."""
    from multidiff.nn.fused import group_norm_by_channel

    g = torch.Generator().manual_seed(0)
    x0 = (
        torch.randn(*shape, generator=g, dtype=torch.float64) * 3
        + torch.randn(shape[1], 1, generator=g).view(1, shape[1], *([1] * (len(shape) - 2))).double() * 5
    )  # per-channel offsets: the variance of the means matters
    weight = (torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5).requires_grad_(affine)
    bias = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_(affine)
    up = torch.randn(*shape, generator=g, dtype=torch.float64)
    layouts = [x0, x0.to(memory_format=torch.channels_last)] if len(shape) == 4 else [x0]
    for x in layouts:
        x = x.detach().requires_grad_()
        w, b = (weight, bias) if affine else (None, None)
        ref = F.group_norm(x, 4, w, b, eps=1e-5)
        out = group_norm_by_channel(x, 4, w, b, eps=1e-5)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        inputs = [x, weight, bias] if affine else [x]
        grads = torch.autograd.grad((ref * up).sum(), inputs)
        ours = torch.autograd.grad((out * up).sum(), inputs)
        for a, r in zip(ours, grads):
            torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


def test_group_norm_by_channel_keeps_float32_statistics_for_bf16_under_autocast() -> None:
    """bf16 activations with a large common offset: the output is in the autocast dtype and within bf16
    rounding of the float64 answer (statistics accumulate in float32)."""
    from multidiff.nn.fused import group_norm_by_channel

    x = (torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1)) + 50).bfloat16()
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    with torch.autocast("cpu", torch.bfloat16):
        out = group_norm_by_channel(x, 4, w, b)
    ref = F.group_norm(x.double(), 4, w.double(), b.double(), eps=1e-5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_compiled_group_norm_takes_per_channel_statistics_unless_told_not_to() -> None:
    """With by_channel, the layer's compiled graph reduces per channel (var_mean) instead of calling
    group_norm; without (the default), ATen's group_norm; the result is GroupNorm's either way."""
    import torch._dynamo

    from multidiff.nn.layers import GroupNorm

    x = torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)
    for by_channel, present, absent in ((True, "var_mean", "group_norm"), (False, "group_norm", "var_mean")):
        torch._dynamo.reset()
        norm = GroupNorm(4, 8, by_channel=by_channel)
        seen: list[str] = []

        def backend(gm, inputs, seen=seen):
            seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
            return gm.forward

        out = torch.compile(norm, backend=backend)(x)
        assert any(present in t for t in seen) and not any(absent in t for t in seen), seen
        torch.testing.assert_close(out, F.group_norm(x, 4, norm.weight, norm.bias), rtol=1e-5, atol=1e-5)
