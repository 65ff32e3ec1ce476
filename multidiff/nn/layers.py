"""Layers shared by the multidiff backbones (DiT, U-Net).

Everything here is stateless apart from learned parameters: positional tables (sin-cos, rotary) are
computed in ``forward`` from the grid shape, so a backbone accepts any input size and nothing is cached
at module level.

Axis letters in shape comments: B batch, L tokens, D width, nH heads, Dh head width, A position axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .fused import (
    apply_rotary,
    group_norm_by_channel,
    group_norm_silu,
    layer_norm,
    modulate,
    rms_rotary,
    rotary,
    split_linear,
)

__all__ = [
    "Downsample",
    "Upsample",
    "nearest_conv_to_transposed",
    "GroupNorm",
    "LayerNorm",
    "RMSNorm",
    "Attention",
    "Mlp",
    "NoiseEmbedding",
    "LabelEmbedding",
    "AdaLNModulation",
    "RotaryEmbedding",
    "modulate",
    "layer_norm",
    "sinusoidal_embedding",
    "sincos_embedding",
    "grid_positions",
    "axis_split",
    "rotary_tables",
    "apply_rotary",
]


# --------------------------------------------------------------------------------------------------
# Normalisation and modulation
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain (Zhang and Sennrich 2019).

    Args:
        dim: Size of the normalised (last) axis.
        eps: Added to the mean square before the square root.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"RMSNorm dim must be positive, got {dim}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., dim) over its last axis."""
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)  # (..., dim)


class GroupNorm(nn.GroupNorm):
    """GroupNorm (Wu and He 2018) that runs in the autocast dtype instead of float32.

    Autocast lists ``group_norm`` among the float32 operations, so under bf16 autocast every
    ``nn.GroupNorm`` casts its bf16 input up and its output back (two extra passes over the activation,
    and a float32 tensor the next convolution casts down again). The CUDA and CPU kernels already
    accumulate the group statistics in float32 for bf16 inputs, so this layer calls ``group_norm`` with
    autocast off on the input's own dtype (the affine parameters cast to it): same statistics, half the
    memory traffic. Outside autocast it is ``nn.GroupNorm``, so float32 results are unchanged.

    :meth:`silu` is the norm with ADM's modulation and the SiLU after it, one Triton kernel in eager
    mode on CUDA when ``fused`` (:func:`~multidiff.nn.fused.group_norm_silu`). With ``by_channel``,
    under ``torch.compile`` the statistics are taken per channel and combined per group
    (:func:`~multidiff.nn.fused.group_norm_by_channel`), which Inductor can fuse without gathering a
    channels-last tensor into groups. It is off until measured on the card against ATen's ``group_norm``
    (the benchmarks' ``by_channel_group_norm`` variant).

    Args:
        *args: ``nn.GroupNorm``'s (num_groups, num_channels, eps, affine).
        fused: Allow the Triton kernel in :meth:`silu`.
        by_channel: Per-channel statistics under ``torch.compile``.
        **kwargs: ``nn.GroupNorm``'s.
    """

    def __init__(self, *args: Any, fused: bool = True, by_channel: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fused = fused
        self.by_channel = by_channel

    def silu(
        self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``SiLU(self(x)·(1 + scale) + shift)`` for ``x`` (N, C, H, W), scale and shift (N, C, 1, 1)."""
        return group_norm_silu(self, x, scale, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B, C, *) over groups of channels; keeps the dtype of the autocast region."""
        if self.by_channel and torch.compiler.is_compiling():
            return group_norm_by_channel(x, self.num_groups, self.weight, self.bias, self.eps)
        return _in_autocast_dtype(
            super().forward, F.group_norm, x, self.num_groups, self.weight, self.bias, self.eps
        )


class LayerNorm(nn.LayerNorm):
    """LayerNorm that runs in the autocast dtype instead of float32 (as :class:`GroupNorm`, whose
    docstring says why); statistics are still accumulated in float32 by the kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., D) over its last axes; keeps the dtype of the autocast region."""
        return _in_autocast_dtype(
            super().forward, F.layer_norm, x, self.normalized_shape, self.weight, self.bias, self.eps
        )


def _in_autocast_dtype(
    plain: Any,
    norm: Any,
    x: torch.Tensor,
    shape: Any,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """``norm(x, shape, weight, bias, eps)`` in the autocast dtype when autocast is on, else ``plain(x)``."""
    dev = x.device.type
    if not torch.is_autocast_enabled(dev):
        return plain(x)
    dtype = torch.get_autocast_dtype(dev)
    w = None if weight is None else weight.to(dtype)
    b = None if bias is None else bias.to(dtype)
    with torch.autocast(dev, enabled=False):
        return norm(x.to(dtype), shape, w, b, eps)


class AdaLNModulation(nn.Module):
    """SiLU + one zero-initialised linear that yields ``chunks`` modulation vectors of width ``dim``.

    adaLN-Zero (Peebles and Xie 2023, Sec. 3.2): the linear starts at zero so every gate is zero and
    each residual block starts as the identity.

    Args:
        dim: Width of each modulation vector.
        cond_dim: Width of the conditioning vector.
        chunks: How many vectors (6 for a DiT block: shift, scale, gate for attention and MLP).
    """

    def __init__(self, dim: int, cond_dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.proj = nn.Linear(cond_dim, chunks * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Map ``cond`` (B, Dc) to ``chunks`` tensors of shape (B, 1, D)."""
        out = self.proj(F.silu(cond))  # (B, chunks*D)
        return out.unsqueeze(1).chunk(self.chunks, dim=-1)  # chunks x (B, 1, D)


# --------------------------------------------------------------------------------------------------
# Embeddings of scalars, labels and positions
# --------------------------------------------------------------------------------------------------


def sinusoidal_embedding(
    values: torch.Tensor,
    dim: int,
    *,
    max_period: float = 10000.0,
    freq_shift: float = 0.0,
) -> torch.Tensor:
    """Sinusoidal features ``[cos(v·ω_k), sin(v·ω_k)]`` of real values (Vaswani et al. 2017, Sec. 3.5).

    ``ω_k = max_period^(-k / (dim/2 - freq_shift))`` for ``k = 0..dim/2-1``; ``freq_shift=0`` is the
    DiT/ADM convention, ``freq_shift=1`` the one diffusers' ``Timesteps(downscale_freq_shift=1)`` uses.
    Computed in float32 whatever the autocast state.

    Args:
        values: (B,) real values (a timestep, 1000·t, or ln(σ)/4: any real number).
        dim: Even number of features.
        max_period: Longest period.
        freq_shift: Shift of the frequency denominator.

    Returns:
        (B, dim) float32 features, cosines first.
    """
    if dim % 2 != 0:
        raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}")
    half = dim // 2
    k = torch.arange(half, device=values.device, dtype=torch.float32)  # (dim/2,)
    freqs = torch.exp(-math.log(max_period) * k / (half - freq_shift))  # (dim/2,)
    args = values.float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class NoiseEmbedding(nn.Module):
    """Embed the noise-level input ``c_noise`` (B,): sinusoidal features then a two-layer SiLU MLP.

    As DiT's timestep embedder (Peebles and Xie 2023; features as in Ho et al. 2020), but for any real
    ``c_noise`` (the multidiff backbone contract).

    Args:
        dim: Output width.
        freq_dim: Number of sinusoidal features.
        max_period: Longest period of the features.
        freq_shift: See :func:`sinusoidal_embedding`.
    """

    def __init__(
        self, dim: int, freq_dim: int = 256, max_period: float = 10000.0, freq_shift: float = 0.0
    ) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.freq_shift = freq_shift
        self.fc1 = nn.Linear(freq_dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        nn.init.normal_(self.fc1.weight, std=0.02)
        nn.init.normal_(self.fc2.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """Map ``c_noise`` (B,) to (B, D)."""
        feats = sinusoidal_embedding(
            c_noise, self.freq_dim, max_period=self.max_period, freq_shift=self.freq_shift
        )  # (B, freq_dim) float32
        h = self.fc1(feats.to(self.fc1.weight.dtype))  # (B, D)
        return self.fc2(F.silu(h))  # (B, D)


class LabelEmbedding(nn.Module):
    """Class-label table with one extra row, index ``num_classes``, for the null label.

    The null label is what classifier-free guidance (Ho and Salimans 2022) feeds for the unconditional
    branch; training drops labels to it. The model itself never drops labels.

    Args:
        num_classes: Number of real classes.
        dim: Embedding width.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    @property
    def null_label(self) -> int:
        """Index of the null (unconditional) label."""
        return self.num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Map ``labels`` (B,) int64 in [0, num_classes] to (B, D)."""
        return self.table(labels)  # (B, D)


def grid_positions(grid: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Integer coordinates of every cell of a grid, row-major (last axis fastest).

    Args:
        grid: Size of each axis, e.g. (H, W) or (F, H, W).
        device: Where to build the table.

    Returns:
        (L, A) float32 positions with L = prod(grid), A = len(grid).
    """
    axes = [torch.arange(n, device=device, dtype=torch.float32) for n in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")  # A x grid
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)  # (L, A)


def axis_split(width: int, num_axes: int) -> tuple[int, ...]:
    """Split an even ``width`` into ``num_axes`` even parts, the larger parts last.

    Used to share a head (rotary) or an embedding (sin-cos) between position axes; e.g. 64 over 3 axes
    gives (20, 22, 22), so the spatial axes of (F, H, W) get the extra pairs.
    """
    if width % 2 != 0 or width < 2 * num_axes:
        raise ValueError(f"cannot split width {width} into {num_axes} even parts")
    pairs = width // 2
    base, rem = divmod(pairs, num_axes)
    counts = [base + (1 if a >= num_axes - rem else 0) for a in range(num_axes)]
    return tuple(2 * c for c in counts)


def sincos_embedding(
    grid: Sequence[int], dim: int, *, max_period: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """Fixed sin-cos position embedding for a 1-, 2- or 3-D grid (Vaswani et al. 2017; MAE/DiT layout).

    The width is split over the axes (:func:`axis_split`); the chunks are laid out from the last axis
    to the first, each ``[sin(p·ω), cos(p·ω)]`` with ``ω_k = max_period^(-k/(d/2))``. For 2-D grids this
    is exactly the embedding of MAE (He et al. 2022) and DiT: the first half encodes the column (W),
    the second half the row (H).

    Args:
        grid: Size of each axis, e.g. (H, W).
        dim: Embedding width (even).
        max_period: Longest period.
        device: Where to build the table.

    Returns:
        (L, dim) float32 table, tokens in row-major order.
    """
    pos = grid_positions(grid, device)  # (L, A)
    widths = axis_split(dim, len(grid))
    chunks = []
    for axis in reversed(range(len(grid))):
        half = widths[axis] // 2
        k = torch.arange(half, device=device, dtype=torch.float64)  # (d/2,)
        omega = (1.0 / max_period ** (k / half)).float()  # (d/2,)
        args = pos[:, axis, None] * omega[None]  # (L, d/2)
        chunks += [torch.sin(args), torch.cos(args)]
    return torch.cat(chunks, dim=-1)  # (L, dim)


# --------------------------------------------------------------------------------------------------
# Rotary position embeddings
# --------------------------------------------------------------------------------------------------


def rotary_tables(
    grid: Sequence[int],
    head_dim: int,
    *,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of axial rotary embeddings (RoPE, Su et al. 2021) for an N-D grid.

    The ``head_dim/2`` rotation pairs are shared among the axes (:func:`axis_split`); pair k of axis a
    turns by ``p_a · θ^(-k/n_a)`` where ``n_a`` is that axis' pair count (axial RoPE as in Heo et al.
    2024, "Rotary Position Embedding for Vision Transformer"). Compute once per forward and pass to
    every attention layer.

    Args:
        grid: Size of each position axis, e.g. (T,), (H, W) or (F, H, W).
        head_dim: Width of one attention head (even).
        theta: Base of the frequencies.
        device: Where to build the tables.

    Returns:
        ``(cos, sin)``, each (L, head_dim/2) float32 with L = prod(grid).
    """
    pos = grid_positions(grid, device)  # (L, A)
    angles = []
    for axis, width in enumerate(axis_split(head_dim, len(grid))):
        n = width // 2
        k = torch.arange(n, device=device, dtype=torch.float64)  # (n,)
        inv_freq = (theta ** (-k / n)).float()  # (n,)
        angles.append(pos[:, axis, None] * inv_freq[None])  # (L, n)
    ang = torch.cat(angles, dim=-1)  # (L, Dh/2)
    return torch.cos(ang), torch.sin(ang)


class RotaryEmbedding(nn.Module):
    """Parameter-free module form of :func:`rotary_tables` (holds ``head_dim`` and ``theta``)."""

    def __init__(self, head_dim: int, num_axes: int, theta: float = 10000.0) -> None:
        super().__init__()
        axis_split(head_dim, num_axes)  # validates
        self.head_dim = head_dim
        self.num_axes = num_axes
        self.theta = theta

    def forward(
        self, grid: Sequence[int], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables ``(cos, sin)``, each (prod(grid), head_dim/2)."""
        if len(grid) != self.num_axes:
            raise ValueError(f"RotaryEmbedding built for {self.num_axes} axes, got grid {tuple(grid)}")
        return rotary_tables(grid, self.head_dim, theta=self.theta, device=device)


# --------------------------------------------------------------------------------------------------
# Attention and MLP
# --------------------------------------------------------------------------------------------------


_SDPA_BACKENDS: dict[str, SDPBackend] = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


class Attention(nn.Module):
    """Multi-head self- or cross-attention through ``F.scaled_dot_product_attention``.

    Self-attention uses one fused QKV projection; cross-attention (``context_dim`` set) a query
    projection and one fused KV projection of the context. Optional QK-norm (RMSNorm over each head,
    Dehghani et al. 2023) and rotary embeddings (queries and keys; self-attention only).

    Args:
        dim: Token width D (a multiple of ``heads``).
        heads: Number of heads.
        context_dim: Width of the context tokens for cross-attention; None for self-attention.
        qk_norm: Normalise queries and keys with RMSNorm.
        bias: Biases on the projections.
        eps: RMSNorm epsilon.
        backends: SDPA kernels to prefer, in order, from ``"cudnn"``, ``"flash"``, ``"efficient"``,
            ``"math"`` (scoped to this layer's call through ``torch.nn.attention.sdpa_kernel``); empty
            leaves PyTorch's own choice.
        fused: Rotary embeddings (after QK-norm, when both are on) through one Triton kernel in eager
            mode on CUDA (:mod:`multidiff.nn.fused`), the packed projections as separate GEMMs in eager
            mode (:func:`~multidiff.nn.fused.split_linear`: no stacking of their gradients), and
            :meth:`across_frames` without gathering the frames; False keeps the PyTorch ops and the
            gathering.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        context_dim: int | None = None,
        qk_norm: bool = False,
        bias: bool = True,
        eps: float = 1e-6,
        backends: Sequence[str] = (),
        fused: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"attention width {dim} is not a multiple of heads={heads}")
        unknown = [b for b in backends if b not in _SDPA_BACKENDS]
        if unknown:
            raise ValueError(f"unknown attention backends {unknown}; choose from {sorted(_SDPA_BACKENDS)}")
        self.backends = tuple(backends)
        self.fused = fused
        self.heads = heads
        self.head_dim = dim // heads
        self.is_cross = context_dim is not None
        if context_dim is None:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.to_q = nn.Linear(dim, dim, bias=bias)
            self.to_kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        self.q_norm: nn.Module = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: Query tokens (B, L, D).
            context: Key/value tokens (B, Lc, Dc) for cross-attention; must be None for self-attention.
            mask: Boolean key mask (B, Lk), True = attend. A row with no True key gives a zero output.
            rope: ``(cos, sin)`` tables (L, Dh/2) from :func:`rotary_tables` (self-attention only).

        Returns:
            (B, L, D).
        """
        B, L, D = x.shape
        nH, Dh = self.heads, self.head_dim
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention layer called without context")
            Lk = context.shape[1]
            q = self.to_q(x).view(B, L, nH, Dh).transpose(1, 2)  # (B, nH, L, Dh)
            if self._split(self.to_kv):
                kv = split_linear(context, self.to_kv.weight, self.to_kv.bias, 2)  # 2 x (B, Lk, D)
                k, v = (t.view(B, Lk, nH, Dh).transpose(1, 2) for t in kv)  # 2 x (B, nH, Lk, Dh)
            else:
                kv = self.to_kv(context).view(B, Lk, 2, nH, Dh).permute(2, 0, 3, 1, 4)  # (2, B, nH, Lk, Dh)
                k, v = kv.unbind(0)  # 2 x (B, nH, Lk, Dh)
        else:
            if context is not None:
                raise ValueError("self-attention layer got a context; build it with context_dim")
            if self._split(self.to_qkv):
                qkv = split_linear(x, self.to_qkv.weight, self.to_qkv.bias, 3)  # 3 x (B, L, D)
                q, k, v = (t.view(B, L, nH, Dh).transpose(1, 2) for t in qkv)  # 3 x (B, nH, L, Dh)
            else:
                qkv = self.to_qkv(x).view(B, L, 3, nH, Dh).permute(2, 0, 3, 1, 4)  # (3, B, nH, L, Dh)
                q, k, v = qkv.unbind(0)  # 3 x (B, nH, L, Dh)
        attn_mask = None
        keep = None
        if mask is not None:
            keep = mask.any(dim=-1)  # (B,)
            # A row with nothing to attend would give NaN; attend everywhere, then zero it below.
            safe = mask | ~keep[:, None]  # (B, Lk)
            attn_mask = safe[:, None, None, :]  # (B, 1, 1, Lk)
        out = self._attend(q, k, v, rope, attn_mask)  # (B, nH, L, Dh)
        out = out.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        out = self.proj(out)  # (B, L, D)
        if keep is not None:
            out = out * keep[:, None, None].to(out.dtype)  # (B, L, D)
        return out

    def _split(self, layer: nn.Module) -> bool:
        """Whether the packed projection ``layer`` runs as :func:`~multidiff.nn.fused.split_linear`: a
        plain ``nn.Linear`` (not LoRA's or float8's), ``fused`` on, eager mode, gradients on. Under
        ``torch.compile`` the packed GEMM and its split stay as they are (Inductor fuses the split and
        the stacking), and without gradients one GEMM is fewer launches for the same work."""
        return (
            self.fused
            and type(layer) is nn.Linear
            and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        )

    def across_frames(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Self-attention across the F frames at each of the S positions of ``x`` (B, F, S, D).

        The same as ``self`` on ``x.transpose(1, 2).reshape(B·S, F, D)`` with the result moved back,
        without gathering the frames: q, k and v come from three matmuls on x as it lies and enter
        attention as strided (B, S·nH, F, Dh) views, and the fused SDPA kernels write their output
        as (B, F, S·nH, Dh) in memory, so a contiguous x costs no copy either way (the video DiT's
        temporal blocks; a channels-last U-Net's temporal attention). A QKV layer other than a plain
        ``nn.Linear`` (LoRA, float8), or ``fused`` off, gathers, through the layer's own forward.

        Args:
            x: (B, F, S, D).
            rope: Rotary tables (F, Dh/2) over frames, or None.

        Returns:
            (B, F, S, D).
        """
        B, Fr, S, D = x.shape
        if not self.fused or self.is_cross or type(self.to_qkv) is not nn.Linear:
            t = self(x.transpose(1, 2).reshape(B * S, Fr, D), rope=rope)  # (B·S, F, D)
            return t.view(B, S, Fr, D).transpose(1, 2)  # (B, F, S, D)
        qkv = split_linear(x, self.to_qkv.weight, self.to_qkv.bias, 3)  # 3 x (B, F, S, D)
        q, k, v = (
            t.view(B, Fr, S * self.heads, self.head_dim).transpose(1, 2) for t in qkv
        )  # (B, S·nH, F, Dh)
        out = self._attend(q, k, v, rope, None)  # (B, S·nH, F, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, Fr, S, D))  # (B, F, S, D)

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """QK-norm, rotary embedding and SDPA on (B, nH, L, Dh) queries and (B, nH, Lk, Dh) keys/values."""
        if rope is not None and isinstance(self.q_norm, RMSNorm) and isinstance(self.k_norm, RMSNorm):
            q = rms_rotary(q, self.q_norm.weight, self.q_norm.eps, *rope, fused=self.fused)  # (B, nH, L, Dh)
            k = rms_rotary(k, self.k_norm.weight, self.k_norm.eps, *rope, fused=self.fused)  # (B, nH, L, Dh)
        else:
            q = self.q_norm(q)  # (B, nH, L, Dh)
            k = self.k_norm(k)  # (B, nH, Lk, Dh)
            if rope is not None:
                q = rotary(q, *rope, fused=self.fused)  # (B, nH, L, Dh)
                k = rotary(k, *rope, fused=self.fused)  # (B, nH, L, Dh)
        if self.backends:
            with sdpa_kernel([_SDPA_BACKENDS[b] for b in self.backends], set_priority=True):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, nH, L, Dh)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, nH, L, Dh)


class Mlp(nn.Module):
    """Two-layer perceptron with GELU (tanh approximation by default, as DiT).

    Args:
        dim: Input width.
        hidden: Hidden width.
        out_dim: Output width (default ``dim``).
        approximate: ``"tanh"`` or ``"none"`` (exact erf GELU).
        bias: Biases on both layers.
    """

    def __init__(
        self, dim: int, hidden: int, out_dim: int | None = None, approximate: str = "tanh", bias: bool = True
    ) -> None:
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim if out_dim is None else out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (..., dim) to (..., out_dim)."""
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))  # (..., out_dim)


# --------------------------------------------------------------------------------------------------
# Resampling (U-Net)
# --------------------------------------------------------------------------------------------------


class Downsample(nn.Module):
    """Strided 3x3 convolution halving H and W (ADM's learned downsampling)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B·F, C, H, W) -> (B·F, C, H/2, W/2)."""
        return self.conv(x)  # (B·F, C, H/2, W/2)


# Row k of this matrix says which taps (offsets -1, 0, +1) of a 3x3 kernel applied after nearest-neighbour
# doubling land on tap k of the equivalent 4x4 stride-2 transposed kernel (see ``nearest_conv_to_transposed``).
_SUBPIXEL = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def nearest_conv_to_transposed(weight: torch.Tensor) -> torch.Tensor:
    """Turn a 3x3 conv weight (C_out, C_in, 3, 3) applied after nearest x2 upsampling into the weight
    (C_in, C_out, 4, 4) of ``ConvTranspose2d(kernel_size=4, stride=2, padding=1)`` that computes the same map.

    Output pixel 2i+a of nearest-upsample-then-conv reads input rows {i-1, i} (a = 0) or {i, i+1} (a = 1)
    with summed taps; that is a 2x2 kernel per output phase, i.e. a sub-pixel convolution (Shi et al.
    2016), which a stride-2 transposed convolution with a 4x4 kernel computes with 16 instead of 36
    multiply-adds per input pixel and channel pair. Zero padding maps to zero padding, so the two are
    equal everywhere, borders included.
    """
    A = torch.tensor(_SUBPIXEL, dtype=weight.dtype, device=weight.device)  # (4, 3)
    return torch.einsum("ka,lb,ocab->cokl", A, A, weight)  # (C_in, C_out, 4, 4)


class Upsample(nn.Module):
    """Doubling of H and W: ADM's nearest-neighbour upsampling + 3x3 convolution, in sub-pixel form.

    A 4x4 stride-2 transposed convolution, initialised to be exactly nearest x2 followed by a freshly
    initialised 3x3 convolution (:func:`nearest_conv_to_transposed`), costs 44% of the multiply-adds of
    the two-step form. Training may leave that subspace (each of the four output phases gets its own 2x2
    kernel), which is the sub-pixel upsampler of Shi et al. 2016 ("Real-Time Single Image and Video
    Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network"); starting from the
    nearest-neighbour solution avoids the checkerboard artefacts of a random one (Aitken et al. 2017).

    Args:
        ch: Channels.
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(ch, ch, 4, stride=2, padding=1)
        conv3 = nn.Conv2d(ch, ch, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(nearest_conv_to_transposed(conv3.weight))
            self.conv.bias.copy_(conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B·F, C, H, W) -> (B·F, C, 2H, 2W)."""
        return self.conv(x)  # (B·F, C, 2H, 2W)
