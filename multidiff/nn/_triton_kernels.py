"""Triton kernels behind :mod:`multidiff.nn.fused` (imported only when a fused op runs on CUDA).

Each kernel does in one pass over memory what PyTorch's eager mode does in several launches, with
the statistics in float32. Their reference paths and the math are in :mod:`multidiff.nn.fused`.
With ``TRITON_INTERPRET=1`` set before this module is imported, they run on CPU tensors (the tests
compare them with the reference that way).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def ln_modulate_fwd(
    X,  # (R, D) contiguous, R = B·L rows
    SHIFT,  # (B, D) rows of stride s_shift, unit stride along D
    SCALE,  # (B, D) rows of stride s_scale
    Y,  # (R, D) contiguous out
    MEAN,  # (R,) float32 out
    RSTD,  # (R,) float32 out
    L,
    D,
    s_shift,
    s_scale,
    eps,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // L
    cols = tl.arange(0, BLOCK_D)
    m = cols < D
    x = tl.load(X + row * D + cols, mask=m, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / D
    xc = tl.where(m, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / D + eps)
    shift = tl.load(SHIFT + b * s_shift + cols, mask=m, other=0.0).to(tl.float32)
    scale = tl.load(SCALE + b * s_scale + cols, mask=m, other=0.0).to(tl.float32)
    y = xc * rstd * (1.0 + scale) + shift
    tl.store(Y + row * D + cols, y.to(Y.dtype.element_ty), mask=m)
    tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)


@triton.jit
def ln_modulate_bwd(
    X,  # (R, D) contiguous
    SCALE,  # (B, D) rows of stride s_scale
    DY,  # (R, D) contiguous
    MEAN,  # (R,) float32
    RSTD,  # (R,) float32
    DX,  # (R, D) contiguous out
    DSCALE,  # (B, chunks, D) float32 out: partial sums of dy·x̂ over this program's rows
    DSHIFT,  # (B, chunks, D) float32 out: partial sums of dy
    L,
    D,
    s_scale,
    rows,  # rows of one sample handled by one program
    chunks,
    BLOCK_D: tl.constexpr,
    STAGES: tl.constexpr,  # loop steps in flight (software pipelining of the rows' loads; 1: none)
):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    m = cols < D
    gain = 1.0 + tl.load(SCALE + b * s_scale + cols, mask=m, other=0.0).to(tl.float32)
    acc_scale = tl.zeros((BLOCK_D,), dtype=tl.float32)
    acc_shift = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in tl.range(0, rows, num_stages=STAGES):
        pos = c * rows + i
        ok = pos < L
        row = b * L + pos
        mr = m & ok
        x = tl.load(X + row * D + cols, mask=mr, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * D + cols, mask=mr, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + row, mask=ok, other=0.0)
        rstd = tl.load(RSTD + row, mask=ok, other=0.0)
        xhat = tl.where(mr, (x - mean) * rstd, 0.0)
        g = dy * gain
        # d/dx of LayerNorm: rstd·(g − mean(g) − x̂·mean(g·x̂))
        dx = (g - tl.sum(g, axis=0) / D - xhat * (tl.sum(g * xhat, axis=0) / D)) * rstd
        tl.store(DX + row * D + cols, dx.to(DX.dtype.element_ty), mask=mr)
        acc_scale += dy * xhat
        acc_shift += dy
    out = (b * chunks + c) * D + cols
    tl.store(DSCALE + out, acc_scale, mask=m)
    tl.store(DSHIFT + out, acc_shift, mask=m)


@triton.jit
def gated_residual_fwd(
    X,  # (R, D) contiguous, R = B·L rows
    GATE,  # (B, D) rows of stride s_gate, unit stride along D
    H,  # (R, D) contiguous
    Y,  # (R, D) contiguous out: x + gate·h
    R,
    L,
    D,
    s_gate,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    m = (rows < R)[:, None] & (cols < D)[None, :]
    at = rows[:, None] * D + cols[None, :]
    g = tl.load(GATE + (rows // L)[:, None] * s_gate + cols[None, :], mask=m, other=0.0).to(tl.float32)
    x = tl.load(X + at, mask=m, other=0.0).to(tl.float32)
    h = tl.load(H + at, mask=m, other=0.0).to(tl.float32)
    tl.store(Y + at, (x + g * h).to(Y.dtype.element_ty), mask=m)


@triton.jit
def gated_residual_bwd(
    DY,  # (R, D) contiguous
    GATE,  # (B, D) rows of stride s_gate
    H,  # (R, D) contiguous
    DH,  # (R, D) contiguous out: dy·gate
    DGATE,  # (B, chunks, D) float32 out: partial sums of dy·h over this program's rows
    L,
    D,
    s_gate,
    rows,  # rows of one sample handled by one program
    chunks,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mc = cols < D
    g = tl.load(GATE + b * s_gate + cols, mask=mc, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(0, rows, BLOCK_R):
        r = i + tl.arange(0, BLOCK_R)
        pos = c * rows + r
        m = ((r < rows) & (pos < L))[:, None] & mc[None, :]
        at = (b * L + pos)[:, None] * D + cols[None, :]
        dy = tl.load(DY + at, mask=m, other=0.0).to(tl.float32)
        h = tl.load(H + at, mask=m, other=0.0).to(tl.float32)
        tl.store(DH + at, (dy * g[None, :]).to(DH.dtype.element_ty), mask=m)
        acc += tl.sum(dy * h, axis=0)
    tl.store(DGATE + (b * chunks + c) * D + cols, acc, mask=mc)


# The adaLN LayerNorm kernels' launch settings are timed on the card at the first call per width and dtype
# (triton.autotune; seconds, once: each setting compiled and timed) instead of fixed: one row a program
# forward and one row a loop step backward leave few bytes in flight at fixed settings, and fewer warps a
# row (more rows in flight) or a pipelined loop (STAGES: the next rows' loads issued, as asynchronous
# copies, before this row's reductions) are what can fix that; which wins is the card's to say. On an H200
# at DiT-XL/2's width (benchmarks/RESULTS.md, call 13) the fixed settings took 84 and 137 µs, the picked
# ones (2 warps forward, 4 with STAGES 3 backward) 63 and 82 µs. Each kernel writes its outputs without
# accumulating, so the repeated timing calls leave them right. The first config is the fixed setting used
# before (8 warps forward, 16 backward at DiT widths). The setting is picked at the first call's shape and
# kept for that width and dtype; two runs (or two ranks) may pick differently, and their results then
# differ in the last bits (the sums' order). Timing synchronises with the host, so a CUDA-graph capture
# must come after a warm-up call (CudaGraphed's does).
ln_modulate_fwd_tuned = triton.autotune(
    [triton.Config({}, num_warps=w, num_stages=1) for w in (8, 2, 4, 16)], key=["D"]
)(ln_modulate_fwd)
ln_modulate_bwd_tuned = triton.autotune(
    [triton.Config({"STAGES": s}, num_warps=w) for w in (16, 8, 4) for s in (1, 3)], key=["D"]
)(ln_modulate_bwd)


def launch(tuner: triton.runtime.Autotuner, grid: tuple[int, ...], *args: object, **kwargs: object) -> None:
    """Run an autotuned kernel; on CPU tensors (Triton's interpreter, which :func:`~multidiff.nn.fused.
    fused_available` lets through only under ``TRITON_INTERPRET=1``; no GPU to time on) the kernel at its
    first setting, without the autotuner (which would time it, on CUDA, in Triton versions before 3.8)."""
    if not args[0].is_cuda:  # type: ignore[attr-defined]
        first = tuner.configs[0]
        tuner.fn[grid](*args, **kwargs, **first.kwargs, num_warps=first.num_warps)
    else:
        tuner[grid](*args, **kwargs)


@triton.jit
def rotary(
    X,  # (B, nH, L, 2·half) with strides (s_b, s_h, s_l, 1)
    COS,  # (L, half) float32 contiguous
    SIN,  # (L, half) float32 contiguous
    Y,  # (B, nH, L, 2·half) contiguous out
    R,  # B·nH·L rows
    heads,
    L,
    half,
    s_b,
    s_h,
    s_l,
    sign,  # +1 rotates forward, -1 backward (the transpose, for the gradient)
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_H)
    m = (r < R)[:, None] & (d < half)[None, :]
    pos = r % L
    bh = r // L
    src = ((bh // heads) * s_b + (bh % heads) * s_h + pos * s_l)[:, None] + d[None, :]
    x1 = tl.load(X + src, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(X + src + half, mask=m, other=0.0).to(tl.float32)
    tab = (pos * half)[:, None] + d[None, :]
    cos = tl.load(COS + tab, mask=m, other=0.0)
    sin = tl.load(SIN + tab, mask=m, other=0.0) * sign
    dst = (r * 2 * half)[:, None] + d[None, :]
    tl.store(Y + dst, (x1 * cos - x2 * sin).to(Y.dtype.element_ty), mask=m)
    tl.store(Y + dst + half, (x2 * cos + x1 * sin).to(Y.dtype.element_ty), mask=m)


# GroupNorm over x viewed as (N, C, HW) with strides (s_n, s_c, s_hw): NCHW (s_hw = 1) and
# channels-last (s_c = 1) alike. z = x̂·gain + bias with gain, bias rows (N or 1, C); y = SiLU(z) or z.
# Every kernel works on (BLOCK_HW pixels x BLOCK_C channels) tiles of one sample, shaped by the caller
# so that loads run along the unit-stride axis; statistics and weight gradients are per-channel partial
# sums over a program's pixels, reduced to groups afterwards (coalesced in both layouts).


@triton.jit
def _gn_load(X, n, hw, c, HW, C, s_n, s_c, s_hw):
    """One (pixels x channels) tile of sample n in float32 (zeros outside), and its mask."""
    m = (hw < HW)[:, None] & (c < C)[None, :]
    x = tl.load(X + n * s_n + hw[:, None] * s_hw + c[None, :] * s_c, mask=m, other=0.0).to(tl.float32)
    return x, m


@triton.jit
def group_norm_partial_stats(
    X, PMEAN, PM2, HW, C, s_n, s_c, s_hw, rows, nhb,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Per-channel mean and sum of squared deviations over ``rows`` pixels (tiles merged by Chan et
    al.'s parallel formula): PMEAN, PM2 (N, nhb, C)."""
    n = tl.program_id(0).to(tl.int64)
    hb = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    valid = tl.maximum(tl.minimum(HW - hb * rows, rows), 0)  # this program's pixels inside the image
    mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for start in range(0, rows, BLOCK_HW):
        hw = hb * rows + start + tl.arange(0, BLOCK_HW)
        x, m = _gn_load(X, n, hw, c, hb * rows + valid, C, s_n, s_c, s_hw)
        count = tl.minimum(valid, start) * 1.0  # pixels merged so far
        t = tl.minimum(tl.maximum(valid - start, 0), BLOCK_HW) * 1.0  # pixels in this tile
        tile_mean = tl.sum(x, axis=0) / tl.maximum(t, 1.0)
        d = tl.where(m, x - tile_mean[None, :], 0.0)
        total = count + t
        delta = tile_mean - mean
        mean += delta * (t / tl.maximum(total, 1.0))
        m2 += tl.sum(d * d, axis=0) + delta * delta * (count * t / tl.maximum(total, 1.0))
    out = (n * nhb + hb) * C + c
    tl.store(PMEAN + out, mean, mask=c < C)
    tl.store(PM2 + out, m2, mask=c < C)


@triton.jit
def group_norm_combine(
    PMEAN, PM2, MEAN, RSTD, HW, C, Cg, G, rows, nhb, eps, BLOCK_P: tl.constexpr, BLOCK_CG: tl.constexpr
):
    """Group mean and 1/std of sample n, group g from the per-channel partials (Chan et al. again)."""
    n = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)
    c = g * Cg + tl.arange(0, BLOCK_CG)
    cm = tl.arange(0, BLOCK_CG) < Cg
    total = HW * Cg * 1.0
    acc = tl.zeros((BLOCK_P, BLOCK_CG), dtype=tl.float32)
    for start in range(0, nhb, BLOCK_P):
        hb = start + tl.arange(0, BLOCK_P)
        m = (hb < nhb)[:, None] & cm[None, :]
        cnt = tl.maximum(tl.minimum(HW - hb * rows, rows), 0).to(tl.float32)
        pm = tl.load(PMEAN + (n * nhb + hb[:, None]) * C + c[None, :], mask=m, other=0.0)
        acc += pm * cnt[:, None]
    mean = tl.sum(tl.sum(acc, axis=1), axis=0) / total
    acc = tl.zeros((BLOCK_P, BLOCK_CG), dtype=tl.float32)
    for start in range(0, nhb, BLOCK_P):
        hb = start + tl.arange(0, BLOCK_P)
        m = (hb < nhb)[:, None] & cm[None, :]
        cnt = tl.maximum(tl.minimum(HW - hb * rows, rows), 0).to(tl.float32)
        pm = tl.load(PMEAN + (n * nhb + hb[:, None]) * C + c[None, :], mask=m, other=0.0)
        pm2 = tl.load(PM2 + (n * nhb + hb[:, None]) * C + c[None, :], mask=m, other=0.0)
        acc += tl.where(m, pm2 + cnt[:, None] * (pm - mean) * (pm - mean), 0.0)
    var = tl.sum(tl.sum(acc, axis=1), axis=0) / total
    tl.store(MEAN + n * G + g, mean)
    tl.store(RSTD + n * G + g, 1.0 / tl.sqrt(var + eps))


@triton.jit
def _gn_tile(
    X, MEAN, RSTD, GAIN, BIAS, n, hw, c, HW, C, Cg, G, s_n, s_c, s_hw, s_gain, s_bias
):  # fmt: skip
    """x̂, gain, z and the mask of one tile of sample n, and 1/std per channel."""
    x, m = _gn_load(X, n, hw, c, HW, C, s_n, s_c, s_hw)
    cm = c < C
    grp = n * G + c // Cg
    mean = tl.load(MEAN + grp, mask=cm, other=0.0)
    rstd = tl.load(RSTD + grp, mask=cm, other=0.0)
    gain = tl.load(GAIN + n * s_gain + c, mask=cm, other=0.0).to(tl.float32)
    bias = tl.load(BIAS + n * s_bias + c, mask=cm, other=0.0).to(tl.float32)
    xhat = tl.where(m, (x - mean[None, :]) * rstd[None, :], 0.0)
    z = xhat * gain[None, :] + bias[None, :]
    return xhat, gain, z, m, rstd


@triton.jit
def group_norm_apply(
    X, Y, MEAN, RSTD, GAIN, BIAS, HW, C, Cg, G, s_n, s_c, s_hw, y_n, y_c, y_hw, s_gain, s_bias,
    SILU: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    hw = tl.program_id(1).to(tl.int64) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = tl.program_id(2).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    _, _, z, m, _ = _gn_tile(
        X, MEAN, RSTD, GAIN, BIAS, n, hw, c, HW, C, Cg, G, s_n, s_c, s_hw, s_gain, s_bias
    )
    if SILU:
        z = z * tl.sigmoid(z)
    tl.store(Y + n * y_n + hw[:, None] * y_hw + c[None, :] * y_c, z.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _dz(DY, n, hw, c, m, z, dy_n, dy_c, dy_hw, SILU: tl.constexpr):
    """The gradient at z = x̂·gain + bias: dy, through SiLU' = s·(1 + z·(1 - s)) when SILU."""
    dy = tl.load(DY + n * dy_n + hw[:, None] * dy_hw + c[None, :] * dy_c, mask=m, other=0.0).to(tl.float32)
    if SILU:
        s = tl.sigmoid(z)
        dy = dy * s * (1.0 + z * (1.0 - s))
    return tl.where(m, dy, 0.0)


@triton.jit
def group_norm_bwd_partial(
    X, DY, MEAN, RSTD, GAIN, BIAS, DGAIN, DBIAS, HW, C, Cg, G, s_n, s_c, s_hw, dy_n, dy_c, dy_hw,
    s_gain, s_bias, rows, nhb, SILU: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Per-channel partial sums over ``rows`` pixels of dz·x̂ and dz: DGAIN, DBIAS (N, nhb, C)."""
    n = tl.program_id(0).to(tl.int64)
    hb = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    acc_g = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_C,), dtype=tl.float32)
    end = tl.minimum(HW, hb * rows + rows)
    for start in range(0, rows, BLOCK_HW):
        hw = hb * rows + start + tl.arange(0, BLOCK_HW)
        xhat, _, z, m, _ = _gn_tile(
            X, MEAN, RSTD, GAIN, BIAS, n, hw, c, end, C, Cg, G, s_n, s_c, s_hw, s_gain, s_bias
        )
        dz = _dz(DY, n, hw, c, m, z, dy_n, dy_c, dy_hw, SILU)
        acc_g += tl.sum(dz * xhat, axis=0)
        acc_b += tl.sum(dz, axis=0)
    out = (n * nhb + hb) * C + c
    tl.store(DGAIN + out, acc_g, mask=c < C)
    tl.store(DBIAS + out, acc_b, mask=c < C)


@triton.jit
def group_norm_bwd_dx(
    X, DY, DX, MEAN, RSTD, GAIN, BIAS, C1, C2, HW, C, Cg, G, s_n, s_c, s_hw, dy_n, dy_c, dy_hw,
    dx_n, dx_c, dx_hw, s_gain, s_bias, SILU: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dx = rstd·(dz·gain − mean_g(dz·gain) − x̂·mean_g(dz·gain·x̂)), the group means in C1, C2."""
    n = tl.program_id(0).to(tl.int64)
    hw = tl.program_id(1).to(tl.int64) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = tl.program_id(2).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    xhat, gain, z, m, rstd = _gn_tile(
        X, MEAN, RSTD, GAIN, BIAS, n, hw, c, HW, C, Cg, G, s_n, s_c, s_hw, s_gain, s_bias
    )
    dz = _dz(DY, n, hw, c, m, z, dy_n, dy_c, dy_hw, SILU)
    grp = n * G + c // Cg
    c1 = tl.load(C1 + grp, mask=c < C, other=0.0)
    c2 = tl.load(C2 + grp, mask=c < C, other=0.0)
    dx = (dz * gain[None, :] - c1[None, :] - xhat * c2[None, :]) * rstd[None, :]
    tl.store(DX + n * dx_n + hw[:, None] * dx_hw + c[None, :] * dx_c, dx.to(DX.dtype.element_ty), mask=m)


@triton.jit
def rms_rotary_fwd(
    X, WEIGHT, COS, SIN, Y, RSTD, R, heads, L, half, s_b, s_h, s_l, eps,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """QK-norm then rotary: y = rot(x·rstd·weight), rows of (B, nH, L, 2·half) as in :func:`rotary`."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_H)
    dm = d < half
    m = (r < R)[:, None] & dm[None, :]
    pos = r % L
    bh = r // L
    src = ((bh // heads) * s_b + (bh % heads) * s_h + pos * s_l)[:, None] + d[None, :]
    x1 = tl.load(X + src, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(X + src + half, mask=m, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * half) + eps)  # (BLOCK_R,)
    n1 = x1 * rstd[:, None] * tl.load(WEIGHT + d, mask=dm, other=0.0).to(tl.float32)[None, :]
    n2 = x2 * rstd[:, None] * tl.load(WEIGHT + half + d, mask=dm, other=0.0).to(tl.float32)[None, :]
    tab = (pos * half)[:, None] + d[None, :]
    cos = tl.load(COS + tab, mask=m, other=0.0)
    sin = tl.load(SIN + tab, mask=m, other=0.0)
    dst = (r * 2 * half)[:, None] + d[None, :]
    tl.store(Y + dst, (n1 * cos - n2 * sin).to(Y.dtype.element_ty), mask=m)
    tl.store(Y + dst + half, (n2 * cos + n1 * sin).to(Y.dtype.element_ty), mask=m)
    tl.store(RSTD + r, rstd, mask=r < R)


@triton.jit
def rms_rotary_bwd(
    X, WEIGHT, COS, SIN, DY, RSTD, DX, DWEIGHT, R, heads, L, half, s_b, s_h, s_l,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Gradients of :func:`rms_rotary_fwd`: dx (contiguous), and per-program partial sums of dweight."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_H)
    dm = d < half
    rm = r < R
    m = rm[:, None] & dm[None, :]
    pos = r % L
    bh = r // L
    src = ((bh // heads) * s_b + (bh % heads) * s_h + pos * s_l)[:, None] + d[None, :]
    dst = (r * 2 * half)[:, None] + d[None, :]
    rstd = tl.load(RSTD + r, mask=rm, other=0.0)[:, None]
    xh1 = tl.load(X + src, mask=m, other=0.0).to(tl.float32) * rstd
    xh2 = tl.load(X + src + half, mask=m, other=0.0).to(tl.float32) * rstd
    dy1 = tl.load(DY + dst, mask=m, other=0.0).to(tl.float32)
    dy2 = tl.load(DY + dst + half, mask=m, other=0.0).to(tl.float32)
    tab = (pos * half)[:, None] + d[None, :]
    cos = tl.load(COS + tab, mask=m, other=0.0)
    sin = tl.load(SIN + tab, mask=m, other=0.0)
    dn1 = dy1 * cos + dy2 * sin  # the rotation's transpose
    dn2 = dy2 * cos - dy1 * sin
    g1 = dn1 * tl.load(WEIGHT + d, mask=dm, other=0.0).to(tl.float32)[None, :]
    g2 = dn2 * tl.load(WEIGHT + half + d, mask=dm, other=0.0).to(tl.float32)[None, :]
    # d/dx of RMSNorm: rstd·(g − x̂·mean(g·x̂))
    c = ((tl.sum(g1 * xh1, axis=1) + tl.sum(g2 * xh2, axis=1)) / (2 * half))[:, None]
    tl.store(DX + dst, ((g1 - xh1 * c) * rstd).to(DX.dtype.element_ty), mask=m)
    tl.store(DX + dst + half, ((g2 - xh2 * c) * rstd).to(DX.dtype.element_ty), mask=m)
    tl.store(DWEIGHT + pid * 2 * half + d, tl.sum(dn1 * xh1, axis=0), mask=dm)
    tl.store(DWEIGHT + pid * 2 * half + half + d, tl.sum(dn2 * xh2, axis=0), mask=dm)
