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
):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    m = cols < D
    gain = 1.0 + tl.load(SCALE + b * s_scale + cols, mask=m, other=0.0).to(tl.float32)
    acc_scale = tl.zeros((BLOCK_D,), dtype=tl.float32)
    acc_shift = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(0, rows):
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
