"""Fused forms of the work around the backbones' matmuls and convolutions, for eager mode on CUDA.

In eager PyTorch, adaLN's ``LayerNorm(x)·(1 + scale) + shift`` is a LayerNorm launch (in float32
under autocast, so two casts more) and an ``addcmul``; rotary embeddings are a cast, two halves, four
products, two sums, a concatenation and a cast back (QK-norm one more pass before them); a U-Net's
``SiLU(GroupNorm(x)·(1 + scale) + shift)`` is three passes, and PyTorch's CUDA GroupNorm turns a
channels-last tensor into NCHW and back. Here each is one Triton kernel forward (GroupNorm: after a
statistics pass) and one or two backward, with the statistics in float32.

Every op has a reference path of plain PyTorch, which is its definition and which it takes when the
kernels cannot or should not run: CPU tensors, no Triton, ``fused=False``, and inside
``torch.compile`` (Inductor fuses the reference itself, so compiled graphs are the same as without
this module). Tests compare the two paths on the CPU through Triton's interpreter, and compile every
kernel for Hopper.

Axis letters: B batch, L tokens, D width, nH heads, Dh head width; N, C, H, W for feature maps.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "layer_norm",
    "modulate",
    "ln_modulate",
    "gated_residual",
    "split_linear",
    "apply_rotary",
    "rotary",
    "rms_rotary",
    "group_norm_silu",
    "group_norm_by_channel",
    "fused_available",
]


def layer_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the last axis without an affine transform (the adaLN blocks supply one)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)  # (..., D)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive affine transform ``x * (1 + scale) + shift`` (DiT, Peebles and Xie 2023, Sec. 3.2).

    Args:
        x: Tokens (B, L, D).
        shift: (B, 1, D), broadcast over tokens.
        scale: (B, 1, D), broadcast over tokens.
    """
    return torch.addcmul(shift, x, 1 + scale)  # (B, L, D)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x_i, x_{i+Dh/2})`` of ``x`` (B, nH, L, Dh) by the tables (L, Dh/2), in float32."""
    x1, x2 = x.float().chunk(2, dim=-1)  # 2 x (B, nH, L, Dh/2)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)  # (B, nH, L, Dh)
    return out.to(x.dtype)  # (B, nH, L, Dh)


def fused_available(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on ``x``: a CUDA tensor (or any tensor under Triton's
    interpreter, ``TRITON_INTERPRET=1``), Triton installed, and not inside ``torch.compile``."""
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1") or torch.compiler.is_compiling():
        return False
    return importlib.util.find_spec("triton") is not None


def _block(n: int) -> int:
    """Smallest power of two >= n (Triton's block sizes are powers of two)."""
    return 1 << max(n - 1, 0).bit_length()


def _rotary_blocks(Dh: int) -> tuple[int, int]:
    """(rows, half-width) tile of the rotary kernels: about 512 pairs, so that a thread holds few
    registers (about 60 at Dh = 64-128 on sm_90, against 190-250 for 32 rows of 64) and many warps fit."""
    block_h = _block(Dh // 2)
    return max(1, 512 // block_h), block_h


def _row_chunks(L: int, groups: int, most: int) -> tuple[int, int]:
    """(rows, chunks): the L tokens of each of ``groups`` independent sums split into at most ``most``
    chunks of ``rows`` tokens, enough programs in all to fill the card (about 2,048; 132 SMs on an
    H200). The backward kernels write each chunk's partial sums, which are then added up."""
    chunks = max(1, min(most, -(-2048 // groups)))
    rows = -(-L // chunks)
    return rows, -(-L // rows)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, D) broadcast vector as (B, D) with unit stride along D."""
    v = x.squeeze(1)
    return v if v.stride(-1) == 1 else v.contiguous()


class _LNModulate(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float
    ) -> torch.Tensor:
        from . import _triton_kernels as K

        B, L, D = x.shape
        x = x.contiguous()
        sh, sc = _rows(shift), _rows(scale)
        out_dtype = torch.promote_types(torch.promote_types(x.dtype, shift.dtype), scale.dtype)
        y = torch.empty(B, L, D, device=x.device, dtype=out_dtype)
        mean = torch.empty(B * L, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        block = _block(D)
        K.launch(
            K.ln_modulate_fwd_tuned, (B * L,), x, sh, sc, y, mean, rstd, L, D, sh.stride(0), sc.stride(0), eps,
            BLOCK_D=block,
        )  # fmt: skip
        ctx.save_for_backward(x, sc, mean, rstd)
        ctx.dtypes = (shift.dtype, scale.dtype)
        return y  # (B, L, D)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        from . import _triton_kernels as K

        x, sc, mean, rstd = ctx.saved_tensors
        B, L, D = x.shape
        dy = dy.contiguous()
        dx = torch.empty_like(x)
        rows, chunks = _row_chunks(L, B, L)  # each program sums dy·x̂ and dy over `rows` tokens of a sample
        dscale = torch.empty(B, chunks, D, device=x.device, dtype=torch.float32)
        dshift = torch.empty_like(dscale)
        block = _block(D)
        K.launch(
            K.ln_modulate_bwd_tuned, (B, chunks), x, sc, dy, mean, rstd, dx, dscale, dshift, L, D, sc.stride(0),
            rows, chunks, BLOCK_D=block,
        )  # fmt: skip
        shift_dtype, scale_dtype = ctx.dtypes
        return (
            dx,
            dshift.sum(1, keepdim=True).to(shift_dtype),  # (B, 1, D)
            dscale.sum(1, keepdim=True).to(scale_dtype),  # (B, 1, D)
            None,
        )


def ln_modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6, *, fused: bool = True
) -> torch.Tensor:
    """adaLN: ``LayerNorm(x)·(1 + scale) + shift`` without affine LayerNorm weights (DiT, Peebles and
    Xie 2023, Sec. 3.2), as one kernel when :func:`fused_available`.

    Args:
        x: Tokens (B, L, D).
        shift: (B, 1, D), broadcast over tokens.
        scale: (B, 1, D), broadcast over tokens.
        eps: Added to the variance.
        fused: Allow the Triton kernel; False always takes the reference path.

    Returns:
        (B, L, D). The fused path returns the promoted dtype of its inputs (bf16 under bf16
        autocast), where the reference returns float32 under autocast (its LayerNorm runs in float32).
    """
    if fused and x.dim() == 3 and shift.shape == scale.shape == (x.shape[0], 1, x.shape[2]):
        if fused_available(x):
            return _LNModulate.apply(x, shift, scale, eps)
    return modulate(layer_norm(x, eps), shift, scale)  # (B, L, D)


class _GatedResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        from . import _triton_kernels as K

        B, L, D = x.shape
        x, h, g = x.contiguous(), h.contiguous(), _rows(gate)
        out_dtype = torch.promote_types(torch.promote_types(x.dtype, gate.dtype), h.dtype)  # as addcmul's
        y = torch.empty(B, L, D, device=x.device, dtype=out_dtype)
        block_r, block_d = _residual_tile(D)
        grid = (-(-B * L // block_r), -(-D // block_d))
        K.gated_residual_fwd[grid](
            x, g, h, y, B * L, L, D, g.stride(0), BLOCK_R=block_r, BLOCK_D=block_d, num_warps=4
        )
        ctx.save_for_backward(g, h)
        ctx.dtypes = (x.dtype, gate.dtype)
        return y  # (B, L, D)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from . import _triton_kernels as K

        g, h = ctx.saved_tensors
        B, L, D = h.shape
        dy = dy.contiguous()
        dh = torch.empty_like(h)
        block_r, block_d = _residual_tile(D)
        tiles = -(-D // block_d)
        # each program sums dy·h over `rows` tokens of one sample, at least one tile of them
        rows, chunks = _row_chunks(L, B * tiles, -(-L // block_r))
        dgate = torch.empty(B, chunks, D, device=h.device, dtype=torch.float32)
        K.gated_residual_bwd[(B, chunks, tiles)](
            dy, g, h, dh, dgate, L, D, g.stride(0), rows, chunks, BLOCK_R=block_r, BLOCK_D=block_d,
            num_warps=4,
        )  # fmt: skip
        x_dtype, gate_dtype = ctx.dtypes
        return dy.to(x_dtype), dgate.sum(1, keepdim=True).to(gate_dtype), dh  # the residual passes dy on


def _residual_tile(D: int) -> tuple[int, int]:
    """(tokens, width) tile of the gated-residual kernels: 16 tokens by up to 128 columns, 2,048
    elements, 16 a thread at 4 warps (DiT widths are multiples of 64, so few lanes idle)."""
    block_d = min(128, _block(D))
    return 2048 // block_d, block_d


def gated_residual(
    x: torch.Tensor, gate: torch.Tensor, h: torch.Tensor, *, fused: bool = True
) -> torch.Tensor:
    """adaLN-Zero's gated residual ``x + gate·h`` (DiT, Peebles and Xie 2023, Sec. 3.2), one kernel each
    way when :func:`fused_available`. Eager PyTorch's ``addcmul`` runs its broadcast as a strided
    (unvectorised) loop, and its backward is three passes (``dy·gate``, ``dy·h``, the sum over tokens);
    the kernels make it one pass forward and one backward, which writes ``dh`` and sums ``dy·h`` in float32.

    Args:
        x: Residual stream (B, L, D).
        gate: (B, 1, D), broadcast over tokens.
        h: Sub-layer output (B, L, D).
        fused: Allow the Triton kernels; False always takes the reference path.

    Returns:
        (B, L, D) in the promoted dtype of x, gate and h.
    """
    if fused and x.dim() == 3 and h.shape == x.shape and gate.shape == (x.shape[0], 1, x.shape[2]):
        if fused_available(x):
            return _GatedResidual.apply(x, gate, h)
    return torch.addcmul(x, gate, h)  # (B, L, D)


class _SplitLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, parts: int
    ) -> tuple[torch.Tensor, ...]:
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)  # (N, Din)
        w = weight.to(dtype)  # (parts·D, Din)
        b = None if bias is None else bias.to(dtype)
        D = w.shape[0] // parts
        outs = []
        for i in range(parts):
            wi = w[i * D : (i + 1) * D]  # (D, Din), contiguous rows
            y = x2 @ wi.t() if b is None else torch.addmm(b[i * D : (i + 1) * D], x2, wi.t())  # (N, D)
            outs.append(y.view(*x.shape[:-1], D))
        ctx.save_for_backward(x2, w)
        ctx.meta = (x.shape, x.dtype, weight.dtype, None if bias is None else bias.dtype, parts)
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, w = ctx.saved_tensors
        shape, x_dtype, w_dtype, b_dtype, parts = ctx.meta
        D = w.shape[0] // parts
        gs = [g.reshape(-1, D).to(w.dtype) for g in grads]  # parts x (N, D)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # dx = Σ_i g_i W_i, summed in the GEMMs' epilogues
            dx = gs[0] @ w[:D]
            for i in range(1, parts):
                dx.addmm_(gs[i], w[i * D : (i + 1) * D])
            dx = dx.view(shape).to(x_dtype)
        if ctx.needs_input_grad[1]:  # each part's rows of dW written in place, no concatenation
            dw = torch.empty_like(w)
            for i in range(parts):
                torch.mm(gs[i].t(), x2, out=dw[i * D : (i + 1) * D])
            dw = dw.to(w_dtype)
        if b_dtype is not None and ctx.needs_input_grad[2]:
            db = torch.cat([g.sum(0) for g in gs]).to(b_dtype)  # (parts·D,)
        return dx, dw, db, None


def split_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, parts: int, *, fused: bool = True
) -> tuple[torch.Tensor, ...]:
    """A packed projection (QKV's ``(3D, Din)`` weight) as ``parts`` separate outputs ``x W_iᵀ + b_i``.

    Splitting one packed output into queries, keys and values costs nothing forward, but the backward
    then stacks their gradients back into one (a ``cat`` over the whole projection) and, when attention
    returns them head-major, copies that into token order: on DiT-XL/2's eager step 24 ms of 238
    (``benchmarks/RESULTS.md``, call 15). Here each part is its own GEMM, so each gradient enters its
    GEMMs where it lies: ``dx`` accumulates the parts in the GEMMs' epilogues and each part's rows of
    ``dW`` are written in place. Under autocast the GEMMs run in the autocast dtype, as ``F.linear``.

    The reference path (``fused=False``, and inside ``torch.compile``, which fuses the split itself)
    is ``F.linear`` on each part's rows of the weight.

    Args:
        x: (..., Din).
        weight: (parts·D, Din).
        bias: (parts·D,) or None.
        parts: How many equal row blocks the weight holds.

    Returns:
        ``parts`` tensors (..., D).
    """
    if weight.shape[0] % parts:
        raise ValueError(f"split_linear: {weight.shape[0]} weight rows do not split into {parts} equal parts")
    if fused and not torch.compiler.is_compiling():
        return _SplitLinear.apply(x, weight, bias, parts)
    D = weight.shape[0] // parts
    return tuple(
        F.linear(x, weight[i * D : (i + 1) * D], None if bias is None else bias[i * D : (i + 1) * D])
        for i in range(parts)
    )  # parts x (..., D)


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(dy, cos, sin, -1.0), None, None  # a rotation's transpose is its inverse


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    from . import _triton_kernels as K

    if x.stride(-1) != 1:
        x = x.contiguous()
    B, nH, L, Dh = x.shape
    y = torch.empty(B, nH, L, Dh, device=x.device, dtype=x.dtype)
    rows = B * nH * L
    block_r, block_h = _rotary_blocks(Dh)
    K.rotary[(-(-rows // block_r),)](
        x, cos, sin, y, rows, nH, L, Dh // 2, x.stride(0), x.stride(1), x.stride(2), sign,
        BLOCK_R=block_r, BLOCK_H=block_h,
    )  # fmt: skip
    return y  # (B, nH, L, Dh)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, fused: bool = True) -> torch.Tensor:
    """Rotary embedding (RoPE, Su et al. 2021) of ``x`` (B, nH, L, Dh) by the tables (L, Dh/2), as
    :func:`~multidiff.nn.layers.apply_rotary` (rotation in float32, result in x's dtype), one kernel
    when :func:`fused_available`; ``fused=False`` always takes the reference path."""
    if fused and x.dim() == 4 and cos.shape == sin.shape == (x.shape[2], x.shape[3] // 2):
        if fused_available(x) and not cos.requires_grad and not sin.requires_grad:
            return _Rotary.apply(x, cos.float().contiguous(), sin.float().contiguous())
    return apply_rotary(x, cos, sin)  # (B, nH, L, Dh)


class _RMSRotary(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        from . import _triton_kernels as K

        if x.stride(-1) != 1:
            x = x.contiguous()
        B, nH, L, Dh = x.shape
        rows = B * nH * L
        y = torch.empty(B, nH, L, Dh, device=x.device, dtype=x.dtype)
        rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
        block_r, block_h = _rotary_blocks(Dh)
        K.rms_rotary_fwd[(-(-rows // block_r),)](
            x, weight, cos, sin, y, rstd, rows, nH, L, Dh // 2, x.stride(0), x.stride(1), x.stride(2), eps,
            BLOCK_R=block_r, BLOCK_H=block_h,
        )  # fmt: skip
        ctx.save_for_backward(x, weight, cos, sin, rstd)
        return y  # (B, nH, L, Dh)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        from . import _triton_kernels as K

        x, weight, cos, sin, rstd = ctx.saved_tensors
        B, nH, L, Dh = x.shape
        rows = B * nH * L
        block_r, block_h = _rotary_blocks(Dh)
        programs = -(-rows // block_r)
        dx = torch.empty(B, nH, L, Dh, device=x.device, dtype=x.dtype)
        dweight = torch.empty(programs, Dh, device=x.device, dtype=torch.float32)
        K.rms_rotary_bwd[(programs,)](
            x, weight, cos, sin, dy.contiguous(), rstd, dx, dweight, rows, nH, L, Dh // 2,
            x.stride(0), x.stride(1), x.stride(2), BLOCK_R=block_r, BLOCK_H=block_h,
        )  # fmt: skip
        return dx, dweight.sum(0).to(weight.dtype), None, None, None


def rms_rotary(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    fused: bool = True,
) -> torch.Tensor:
    """QK-norm then rotary embedding: :func:`apply_rotary` of ``RMSNorm(x)·weight`` over the head width
    (Zhang and Sennrich 2019; Su et al. 2021), one kernel forward and one backward when
    :func:`fused_available`; ``fused=False`` always takes the reference path.

    Args:
        x: Queries or keys (B, nH, L, Dh).
        weight: RMSNorm gain (Dh,).
        eps: Added to the mean square.
        cos: Rotary table (L, Dh/2).
        sin: Rotary table (L, Dh/2).

    Returns:
        (B, nH, L, Dh) in x's dtype.
    """
    ok = (
        x.dim() == 4
        and weight.shape == (x.shape[3],)
        and cos.shape == sin.shape == (x.shape[2], x.shape[3] // 2)
    )
    if fused and ok and fused_available(x) and not cos.requires_grad and not sin.requires_grad:
        return _RMSRotary.apply(x, weight, eps, cos.float().contiguous(), sin.float().contiguous())
    normed = F.rms_norm(x, (x.shape[-1],), weight.to(x.dtype), eps)  # (B, nH, L, Dh)
    return apply_rotary(normed, cos, sin)  # (B, nH, L, Dh)


def _hw_strides(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``x`` (N, C, H, W) and its strides over (N, C, H·W): NCHW or channels-last, else made contiguous."""
    H, W = x.shape[2:]
    if H > 1 and W > 1 and x.stride(2) != W * x.stride(3):
        x = x.contiguous()
    return x, x.stride(0), x.stride(1), x.stride(3) if W > 1 else x.stride(2)


#: Programs a GroupNorm reduction aims for (an H200 has 132 SMs): fewer, longer ones merge more tiles.
GN_PROGRAMS = 2048


def _gn_tiles(N: int, C: int, HW: int, s_c: int) -> tuple[int, int, int, int]:
    """Tile (pixels, channels) with the unit-stride axis long, the pixels one reduction program merges,
    and how many such programs a sample has: (block_hw, block_c, rows, nhb)."""
    if s_c == 1 and C > 1:  # channels-last: contiguous along channels
        block_c = min(_block(C), 128)
        block_hw = min(4096 // block_c, _block(HW))
    else:  # NCHW: contiguous along pixels
        block_hw = min(256, _block(HW))
        block_c = min(4096 // block_hw, _block(C))
    tiles = -(-HW // block_hw)
    per_program = max(1, N * tiles * -(-C // block_c) // GN_PROGRAMS)
    rows = block_hw * min(per_program, tiles)
    return block_hw, block_c, rows, -(-HW // rows)


class _GroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        gain: torch.Tensor,
        bias: torch.Tensor,
        groups: int,
        eps: float,
        silu: bool,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        from . import _triton_kernels as K

        x, s_n, s_c, s_hw = _hw_strides(x)
        N, C, H, W = x.shape
        HW, Cg = H * W, C // groups
        block_hw, block_c, rows, nhb = _gn_tiles(N, C, HW, s_c)
        pmean = torch.empty(N, nhb, C, device=x.device, dtype=torch.float32)
        pm2 = torch.empty_like(pmean)
        K.group_norm_partial_stats[(N, nhb, -(-C // block_c))](
            x, pmean, pm2, HW, C, s_n, s_c, s_hw, rows, nhb, BLOCK_HW=block_hw, BLOCK_C=block_c, num_warps=8
        )
        mean = torch.empty(N, groups, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        block_cg = _block(Cg)
        K.group_norm_combine[(N, groups)](
            pmean, pm2, mean, rstd, HW, C, Cg, groups, rows, nhb, eps,
            BLOCK_P=max(1, min(_block(nhb), 4096 // block_cg)), BLOCK_CG=block_cg,
        )  # fmt: skip
        y = torch.empty_like(x, dtype=out_dtype)  # same memory format as x
        _, y_n, y_c, y_hw = _hw_strides(y)
        K.group_norm_apply[(N, -(-HW // block_hw), -(-C // block_c))](
            x, y, mean, rstd, gain, bias, HW, C, Cg, groups, s_n, s_c, s_hw, y_n, y_c, y_hw,
            gain.stride(0) if gain.shape[0] > 1 else 0, bias.stride(0) if bias.shape[0] > 1 else 0,
            SILU=silu, BLOCK_HW=block_hw, BLOCK_C=block_c, num_warps=8,
        )  # fmt: skip
        ctx.save_for_backward(x, gain, bias, mean, rstd)
        ctx.settings = (groups, silu)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:
        from . import _triton_kernels as K

        x, gain, bias, mean, rstd = ctx.saved_tensors
        groups, silu = ctx.settings
        N, C, H, W = x.shape
        HW, Cg = H * W, C // groups
        _, s_n, s_c, s_hw = _hw_strides(x)
        dy, dy_n, dy_c, dy_hw = _hw_strides(dy)
        s_gain = gain.stride(0) if gain.shape[0] > 1 else 0
        s_bias = bias.stride(0) if bias.shape[0] > 1 else 0
        block_hw, block_c, rows, nhb = _gn_tiles(N, C, HW, s_c)
        dgain = torch.empty(N, nhb, C, device=x.device, dtype=torch.float32)
        dbias = torch.empty_like(dgain)
        K.group_norm_bwd_partial[(N, nhb, -(-C // block_c))](
            x, dy, mean, rstd, gain, bias, dgain, dbias, HW, C, Cg, groups, s_n, s_c, s_hw,
            dy_n, dy_c, dy_hw, s_gain, s_bias, rows, nhb,
            SILU=silu, BLOCK_HW=block_hw, BLOCK_C=block_c, num_warps=8,
        )  # fmt: skip
        dgain, dbias = dgain.sum(1), dbias.sum(1)  # (N, C): Σ dz·x̂ and Σ dz over each sample's pixels
        g = gain.float()
        count = HW * Cg
        c1 = (dbias * g).view(N, groups, Cg).sum(-1) / count  # mean over the group of dz·gain
        c2 = (dgain * g).view(N, groups, Cg).sum(-1) / count  # mean over the group of dz·gain·x̂
        dx = torch.empty_like(x)
        _, dx_n, dx_c, dx_hw = _hw_strides(dx)
        K.group_norm_bwd_dx[(N, -(-HW // block_hw), -(-C // block_c))](
            x, dy, dx, mean, rstd, gain, bias, c1, c2, HW, C, Cg, groups, s_n, s_c, s_hw, dy_n, dy_c, dy_hw,
            dx_n, dx_c, dx_hw, s_gain, s_bias, SILU=silu, BLOCK_HW=block_hw, BLOCK_C=block_c, num_warps=8,
        )  # fmt: skip
        if gain.shape[0] == 1:
            dgain, dbias = dgain.sum(0, keepdim=True), dbias.sum(0, keepdim=True)
        return dx, dgain.to(gain.dtype), dbias.to(bias.dtype), None, None, None, None


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a norm returns: the autocast dtype under autocast on x's device, else x's."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def group_norm_silu(
    norm: nn.GroupNorm,
    x: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    *,
    silu: bool = True,
) -> torch.Tensor:
    """``SiLU(norm(x)·(1 + scale) + shift)``: GroupNorm (Wu and He 2018) with ADM's adaptive
    modulation (Dhariwal and Nichol 2021, Eq. 3) and the activation, as Triton kernels when
    ``norm.fused`` is set and :func:`fused_available`: forward, per-channel statistics, their combination
    per group, then one pass that normalises, modulates and activates; backward, per-channel sums, then
    one pass for the input's gradient.

    The kernel reads NCHW and channels-last tensors alike and writes the layout it reads; PyTorch's
    CUDA GroupNorm makes channels-last tensors contiguous and returns NCHW, a copy each way around
    every norm of a channels-last U-Net.

    Args:
        norm: The GroupNorm layer (its groups, eps, affine weight and bias, and ``fused`` attribute).
        x: (N, C, H, W).
        scale: (N, C, 1, 1) or None.
        shift: (N, C, 1, 1) or None (given with ``scale``).
        silu: Apply SiLU (False: the normalised, modulated values).

    Returns:
        (N, C, H, W), in the autocast dtype under autocast (else x's).
    """
    if getattr(norm, "fused", False) and x.dim() == 4 and fused_available(x):
        N, C = x.shape[:2]
        if scale is not None and shift is not None:  # z = x̂·gain + bias folds the modulation in
            factor, offset = 1 + scale.reshape(N, C).float(), shift.reshape(N, C).float()  # (N, C)
            if norm.affine:
                gain, bias = norm.weight[None] * factor, torch.addcmul(offset, norm.bias[None], factor)
            else:  # the ResBlock's second norm: the modulation is the whole affine
                gain, bias = factor, offset
        elif norm.affine:
            gain, bias = norm.weight[None], norm.bias[None]  # (1, C)
        else:
            gain = torch.ones(1, C, device=x.device, dtype=torch.float32)
            bias = torch.zeros_like(gain)
        return _GroupNormSiLU.apply(x, gain, bias, norm.num_groups, norm.eps, silu, _out_dtype(x))
    h = norm(x)  # (N, C, H, W)
    if scale is not None and shift is not None:
        h = torch.addcmul(shift, h, 1 + scale)  # (N, C, H, W)
    return F.silu(h) if silu else h


def group_norm_by_channel(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """GroupNorm (Wu and He 2018) from per-channel statistics, as plain ops that Inductor fuses well in any
    layout; :class:`~multidiff.nn.layers.GroupNorm` takes it under ``torch.compile``.

    ATen's ``native_group_norm`` decomposes into a reduction over ``x.reshape(N, G, -1)``: for a
    channels-last tensor that is a gather across memory, and the compiled mel U-Net's GroupNorms took
    36.0 ms of a step in channels-last against 27.9 in NCHW (RESULTS.md, call 23). Here the reductions run
    over the spatial axes only, per channel (contiguous across channels in channels-last, within a row in
    NCHW), as the eager Triton kernel does; the group's mean and variance then come from its channels' by
    the law of total variance (equal counts: the mean of the means, and the mean of the variances plus
    the variance of the means), which is exact in exact arithmetic (in floating point it agrees with
    ATen's to rounding). The normalisation is one multiply-add per element with a
    per-(N, C) gain and offset, into which Inductor also fuses a following modulation and SiLU.

    Args:
        x: (N, C, *spatial), spatial possibly empty.
        groups: Groups G (C must be a multiple).
        weight: Affine gain (C,) or None.
        bias: Affine bias (C,) or None.
        eps: Added to the variance.

    Returns:
        (N, C, *spatial) in the autocast dtype under autocast (else x's); statistics in float32 (float64 for
        float64 inputs).
    """
    if x.dim() == 2:  # (N, C): one value per channel
        return group_norm_by_channel(x[..., None], groups, weight, bias, eps)[..., 0]
    N, C = x.shape[:2]
    out_dtype, dev = _out_dtype(x), x.device.type
    acc = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for float64 inputs
    with torch.autocast(dev, enabled=False):
        var_c, mean_c = torch.var_mean(x.to(acc), dim=tuple(range(2, x.dim())), correction=0)  # (N, C)
        mean_c, var_c = mean_c.view(N, groups, C // groups), var_c.view(N, groups, C // groups)
        mean = mean_c.mean(-1, keepdim=True)  # (N, G, 1)
        var = var_c.mean(-1, keepdim=True) + (mean_c - mean).square().mean(-1, keepdim=True)
        rstd = torch.rsqrt(var + eps)  # (N, G, 1)
        gain = rstd.expand(N, groups, C // groups).reshape(N, C)  # (N, C)
        offset = (-mean * rstd).expand(N, groups, C // groups).reshape(N, C)
        if weight is not None:
            gain, offset = gain * weight.to(acc), offset * weight.to(acc)
        if bias is not None:
            offset = offset + bias.to(acc)
        shape = (N, C) + (1,) * (x.dim() - 2)
        return torch.addcmul(offset.view(shape), x.to(acc), gain.view(shape)).to(out_dtype)
