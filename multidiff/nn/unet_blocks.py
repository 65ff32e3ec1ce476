"""The U-Net's building blocks (:mod:`multidiff.nn.unet` assembles them): the adaptive-GroupNorm
residual block of ADM (Dhariwal and Nichol 2021), the video U-Net's temporal convolution and temporal
attention (Ho et al. 2022; Singer et al. 2022), spatial self- and cross-attention (Rombach et al. 2022),
and the stage that strings them together.

Every block maps (B·F, C, H, W) to (B·F, C', H, W); ``frames`` = F recovers the video axis.

Axis letters: B batch, C channels, F frames, H height, W width, L tokens, D width, E embedding width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from multidiff.nn.layers import Attention, GroupNorm, LayerNorm, Mlp

if TYPE_CHECKING:
    from multidiff.nn.unet import UNetConfig

__all__ = ["ResBlock", "TemporalConv", "AttentionBlock", "TemporalAttention", "UNetLayer"]


class ResBlock(nn.Module):
    """Residual block with adaptive GroupNorm (ADM, Dhariwal and Nichol 2021, Eq. 3).

    ``h = conv1(SiLU(GN(x)));  h = conv2(dropout(SiLU(GN(h)·(1 + scale) + shift)));  out = skip(x) + h``
    with ``(scale, shift)`` a linear map of the embedding. ``conv2`` starts at zero, so the block
    starts as its skip path.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        emb_dim: Width E of the (already SiLU-activated) embedding.
        dropout: Dropout probability before ``conv2``.
        groups: GroupNorm groups.
        eps: GroupNorm epsilon.
    """

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int, eps: float
    ) -> None:
        super().__init__()
        self.norm1 = GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        # The affine of the second norm is the modulation itself (its bias gives a learned default).
        self.norm2 = GroupNorm(groups, out_ch, eps=eps, affine=False)
        self.dropout = dropout
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip: nn.Module = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B·F, C_in, H, W) with ``emb`` (B·F, E) already through SiLU."""
        h = self.conv1(self.norm1.silu(x))  # (B·F, C, H, W)
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)  # 2 x (B·F, C, 1, 1)
        h = self.norm2.silu(h, scale, shift)  # SiLU(GN(h)·(1 + scale) + shift) (B·F, C, H, W)
        if self.dropout > 0:
            h = F.dropout(h, p=self.dropout, training=self.training)  # (B·F, C, H, W)
        h = self.conv2(h)  # (B·F, C, H, W)
        return self.skip(x) + h  # (B·F, C, H, W)


class TemporalConv(nn.Module):
    """Residual convolution along the frame axis: ``x + conv_t(SiLU(GN(x)))``.

    The pseudo-3-D convolution of Make-A-Video (Singer et al. 2022, Sec. 3.2): a (k, 1, 1) kernel after
    the spatial (1, 3, 3) ones, initialised to zero so it starts as the identity. Frames are zero-padded
    at both ends, so any frame count works. Written as a 2-D convolution over (F, H·W), which is a view
    of the (B·F, C, H, W) layout in either memory format.

    Args:
        ch: Channels.
        kernel: Odd kernel size along frames.
        groups: GroupNorm groups.
        eps: GroupNorm epsilon.
    """

    def __init__(self, ch: int, kernel: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm = GroupNorm(groups, ch, eps=eps)
        self.conv = nn.Conv2d(ch, ch, (kernel, 1), padding=(kernel // 2, 0))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Mix frames of ``x`` (B·F, C, H, W)."""
        BF, C, H, W = x.shape
        B = BF // frames
        h = self.norm.silu(x)  # (B·F, C, H, W)
        h = h.reshape(B, frames, C, H * W).transpose(1, 2)  # (B, C, F, H·W)
        h = self.conv(h)  # (B, C, F, H·W)
        h = h.transpose(1, 2).reshape(BF, C, H, W)  # (B·F, C, H, W)
        return x + h  # (B·F, C, H, W)


class AttentionBlock(nn.Module):
    """Spatial self-attention within each frame, optional cross-attention to context, optional MLP.

    Pre-LayerNorm residual sub-layers on the tokens of each frame (ADM's attention block with
    cross-attention as in latent diffusion, Rombach et al. 2022, Sec. 3.3). Each sub-layer's output
    projection starts at zero. Tokens are the channels-last view of the feature map, so no transpose
    copy is needed when activations are channels-last.

    Args:
        ch: Channels D.
        head_dim: Width of one head.
        context_dim: Width of context tokens (adds cross-attention), or None.
        mlp_ratio: MLP hidden width over D (0: no MLP).
        qk_norm: RMSNorm on queries and keys.
        eps: LayerNorm epsilon.
    """

    def __init__(
        self, ch: int, head_dim: int, context_dim: int | None, mlp_ratio: float, qk_norm: bool, eps: float
    ) -> None:
        super().__init__()
        heads = ch // head_dim
        self.norm = LayerNorm(ch, eps=eps)
        self.attn = Attention(ch, heads, qk_norm=qk_norm)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)
        self.cross: Attention | None = None
        self.cross_norm: LayerNorm | None = None
        if context_dim is not None:
            self.cross_norm = LayerNorm(ch, eps=eps)
            self.cross = Attention(ch, heads, context_dim=context_dim, qk_norm=qk_norm)
            nn.init.zeros_(self.cross.proj.weight)
            nn.init.zeros_(self.cross.proj.bias)
        self.mlp: Mlp | None = None
        self.mlp_norm: LayerNorm | None = None
        if mlp_ratio > 0:
            self.mlp_norm = LayerNorm(ch, eps=eps)
            self.mlp = Mlp(ch, int(round(ch * mlp_ratio)), approximate="tanh")
            nn.init.zeros_(self.mlp.fc2.weight)
            nn.init.zeros_(self.mlp.fc2.bias)

    def forward(
        self,
        x: torch.Tensor,
        frames: int,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` (B·F, C, H, W); ``context`` (B, Lc, Dc) and ``context_mask`` (B, Lc)."""
        BF, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B·F, H·W, C)
        t = t + self.attn(self.norm(t))  # (B·F, H·W, C)
        if self.cross is not None and self.cross_norm is not None and context is not None:
            # All frames of a sample attend to the same context: group them, no repeat of the context.
            t = t.reshape(BF // frames, frames * H * W, C)  # (B, F·H·W, C)
            t = t + self.cross(self.cross_norm(t), context, mask=context_mask)  # (B, F·H·W, C)
            t = t.reshape(BF, H * W, C)  # (B·F, H·W, C)
        if self.mlp is not None and self.mlp_norm is not None:
            t = t + self.mlp(self.mlp_norm(t))  # (B·F, H·W, C)
        return t.transpose(1, 2).reshape(BF, C, H, W)  # (B·F, C, H, W)


class TemporalAttention(nn.Module):
    """Self-attention along frames at each spatial position (Ho et al. 2022, Sec. 3).

    Frame positions enter as 1-D rotary embeddings (RoPE, Su et al. 2021), a relative encoding like the
    paper's relative position embeddings, so any frame count works. Output projection starts at zero.

    Args:
        ch: Channels D.
        head_dim: Width of one head.
        qk_norm: RMSNorm on queries and keys.
        eps: LayerNorm epsilon.
    """

    def __init__(self, ch: int, head_dim: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.norm = LayerNorm(ch, eps=eps)
        self.attn = Attention(ch, ch // head_dim, qk_norm=qk_norm)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: torch.Tensor, frames: int, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Attend across the frames of ``x`` (B·F, C, H, W) with rotary tables (F, Dh/2)."""
        BF, C, H, W = x.shape
        # (B, F, H·W, C): a view of a channels-last x, so with across_frames no copy either way
        t = x.reshape(BF // frames, frames, C, H * W).transpose(2, 3)  # (B, F, H·W, C)
        t = self.attn.across_frames(self.norm(t), rope=rope)  # (B, F, H·W, C)
        return x + t.transpose(2, 3).reshape(BF, C, H, W)  # (B·F, C, H, W)


class UNetLayer(nn.Module):
    """One U-Net stage: a residual block, then (video) a temporal convolution, then the attention layers
    of its level (spatial and cross-attention, then temporal attention), each optional.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        config: The model config (norms, dropout, heads, context).
        attention: Add spatial self-attention (and cross-attention if the config has a context).
        temporal: Video model: add a temporal convolution.
        temporal_attention: Add temporal attention.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        config: UNetConfig,
        *,
        attention: bool,
        temporal: bool,
        temporal_attention: bool,
    ) -> None:
        super().__init__()
        c = config
        self.res = ResBlock(in_ch, out_ch, c.emb_width, c.dropout, c.norm_groups, c.norm_eps)
        self.tconv = TemporalConv(out_ch, c.temporal_kernel, c.norm_groups, c.norm_eps) if temporal else None
        self.attn = (
            AttentionBlock(out_ch, c.head_dim, c.context_dim, c.mlp_ratio, c.qk_norm, c.norm_eps)
            if attention
            else None
        )
        self.tattn = (
            TemporalAttention(out_ch, c.head_dim, c.qk_norm, c.norm_eps) if temporal_attention else None
        )

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        frames: int,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Map (B·F, C_in, H, W) to (B·F, C_out, H, W); ``emb`` (B·F, E), ``rope`` (F, Dh/2) tables."""
        h = self.res(x, emb)  # (B·F, C, H, W)
        if self.tconv is not None:
            h = self.tconv(h, frames)  # (B·F, C, H, W)
        if self.attn is not None:
            h = self.attn(h, frames, context, context_mask)  # (B·F, C, H, W)
        if self.tattn is not None and rope is not None:
            h = self.tattn(h, frames, rope)  # (B·F, C, H, W)
        return h
