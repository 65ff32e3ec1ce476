"""Diffusion Transformer (DiT, Peebles and Xie 2023, "Scalable Diffusion Models with Transformers").

One model for images/spectrograms ([B, C, H, W], 2-D patches) and video ([B, C, F, H, W], 3-D tubelets).
Blocks are adaLN-Zero transformer blocks (paper Sec. 3.2, Fig. 3): the conditioning vector (noise level
plus optional class label) regresses shift, scale and gate of each sub-layer, and every gate and the
final projection start at zero, so the untrained network outputs exactly zero. Video can use joint
space-time attention or factorised attention that alternates spatial and temporal blocks (Latte,
Ma et al. 2024, variant "interleaved"). Any input size works: the input is padded up to a multiple of
the patch and the output cropped back.

Axis letters: B batch, C channels, F frames, H height, W width, L tokens, D width, S spatial tokens per
frame, P features per patch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from multidiff.nn.fused import gated_residual, ln_modulate
from multidiff.nn.io import PretrainedMixin
from multidiff.nn.layers import (
    AdaLNModulation,
    Attention,
    LabelEmbedding,
    Mlp,
    NoiseEmbedding,
    rotary_tables,
    sincos_embedding,
)

__all__ = ["DiTConfig", "DiT", "DiTBlock", "DIT_PRESETS", "dit_from_preset"]

_POS_EMBEDS = ("rope", "sincos")
_ATTENTIONS = ("joint", "factorised")


@dataclass(frozen=True)
class DiTConfig:
    """Settings of a :class:`DiT`.

    Attributes:
        in_channels: Channels C of the noisy input x.
        out_channels: Output channels (None: same as ``in_channels``; 2·C for a learned-variance head).
        patch: Patch size per position axis: (p, p) for [B, C, H, W], (pt, p, p) for [B, C, F, H, W].
        width: Token width D.
        depth: Number of blocks (for ``attention="factorised"``, spatial and temporal blocks together).
        heads: Attention heads (``width`` must be a multiple).
        mlp_ratio: MLP hidden width over D.
        qk_norm: RMSNorm on queries and keys.
        pos_embed: ``"rope"`` (axial rotary in every attention) or ``"sincos"`` (fixed table added once).
        attention: ``"joint"`` or ``"factorised"`` (3-D inputs only: even blocks attend within a frame,
            odd blocks across frames at one spatial position).
        context_dim: Width of context tokens for cross-attention in every block; None for none.
        num_classes: Number of class labels (the null label is index ``num_classes``); None for none.
        cond_channels: Extra input channels concatenated to x (e.g. known frames and their mask).
        grad_checkpointing: Recompute block activations in the backward pass.
        norm_eps: LayerNorm epsilon.
        noise_freq_dim: Sinusoidal features of ``c_noise``.
        noise_freq_shift: Frequency shift of those features (0 as in DiT, 1 as diffusers' DiT).
        rope_theta: Base of the rotary frequencies.
        fp32_residual: Keep the residual stream in float32 under autocast. False (default, as
            diffusers' DiT under autocast) lets it follow the dtype of the patch embedding, i.e. bf16
            under bf16 autocast: less memory traffic and memory, slightly coarser sums.
        attention_backends: SDPA kernels to prefer, in order (``"cudnn"``, ``"flash"``,
            ``"efficient"``, ``"math"``); empty leaves the choice to PyTorch.
        fused_kernels: In eager mode on CUDA, LayerNorm with its adaLN modulation, the gated
            residuals and the rotary embeddings (with QK-norm) run as Triton kernels
            (:mod:`multidiff.nn.fused`), queries, keys and values are separate GEMMs of the packed
            projection (:func:`~multidiff.nn.fused.split_linear`), and temporal blocks attend without
            gathering frames (``Attention.across_frames``); False keeps the PyTorch ops and the
            gathering. Results agree to rounding.
    """

    in_channels: int = 4
    out_channels: int | None = None
    patch: tuple[int, ...] = (2, 2)
    width: int = 1152
    depth: int = 28
    heads: int = 16
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    pos_embed: str = "rope"
    attention: str = "joint"
    context_dim: int | None = None
    num_classes: int | None = None
    cond_channels: int = 0
    grad_checkpointing: bool = False
    norm_eps: float = 1e-6
    noise_freq_dim: int = 256
    noise_freq_shift: float = 0.0
    rope_theta: float = 10000.0
    fp32_residual: bool = False
    attention_backends: tuple[str, ...] = ()
    fused_kernels: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        object.__setattr__(self, "attention_backends", tuple(self.attention_backends))
        bad = [b for b in self.attention_backends if b not in ("cudnn", "flash", "efficient", "math")]
        if bad:
            raise ValueError(f"DiTConfig.attention_backends has unknown entries {bad}")
        if self.in_channels <= 0:
            raise ValueError(f"DiTConfig.in_channels must be positive, got {self.in_channels}")
        if self.out_channels is not None and self.out_channels <= 0:
            raise ValueError(f"DiTConfig.out_channels must be positive or None, got {self.out_channels}")
        if len(self.patch) not in (1, 2, 3) or any(p <= 0 for p in self.patch):
            raise ValueError(f"DiTConfig.patch must be 1 to 3 positive sizes, got {self.patch}")
        if self.width <= 0 or self.depth <= 0 or self.heads <= 0:
            raise ValueError(
                f"DiTConfig width/depth/heads must be positive, got {self.width}/{self.depth}/{self.heads}"
            )
        if self.width % self.heads != 0:
            raise ValueError(f"DiTConfig.width={self.width} is not a multiple of heads={self.heads}")
        head_dim = self.width // self.heads
        if self.mlp_ratio <= 0:
            raise ValueError(f"DiTConfig.mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.pos_embed not in _POS_EMBEDS:
            raise ValueError(f"DiTConfig.pos_embed must be one of {_POS_EMBEDS}, got {self.pos_embed!r}")
        if self.attention not in _ATTENTIONS:
            raise ValueError(f"DiTConfig.attention must be one of {_ATTENTIONS}, got {self.attention!r}")
        if self.attention == "factorised" and len(self.patch) != 3:
            raise ValueError(
                f"DiTConfig.attention='factorised' needs 3-D patches (pt, p, p), got {self.patch}"
            )
        rope_axes = 2 if self.attention == "factorised" else len(self.patch)
        if self.pos_embed == "rope" and (head_dim % 2 or head_dim < 2 * rope_axes):
            raise ValueError(
                f"DiTConfig: head width {head_dim} too small or odd for rotary over {rope_axes} axes"
            )
        if self.pos_embed == "sincos" and (self.width % 2 or self.width < 2 * len(self.patch)):
            raise ValueError(
                f"DiTConfig.width={self.width} cannot hold a sin-cos table over {len(self.patch)} axes"
            )
        if self.context_dim is not None and self.context_dim <= 0:
            raise ValueError(f"DiTConfig.context_dim must be positive or None, got {self.context_dim}")
        if self.num_classes is not None and self.num_classes <= 0:
            raise ValueError(f"DiTConfig.num_classes must be positive or None, got {self.num_classes}")
        if self.cond_channels < 0:
            raise ValueError(f"DiTConfig.cond_channels must be >= 0, got {self.cond_channels}")
        if self.norm_eps <= 0:
            raise ValueError(f"DiTConfig.norm_eps must be positive, got {self.norm_eps}")
        if self.noise_freq_dim % 2 or self.noise_freq_dim <= 2 * self.noise_freq_shift:
            raise ValueError(
                f"DiTConfig.noise_freq_dim must be even and > 2*shift, got {self.noise_freq_dim}"
            )

    @property
    def out_ch(self) -> int:
        """Output channels with the default applied."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.width // self.heads


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (Peebles and Xie 2023, Fig. 3), optionally with cross-attention.

    ``layout`` says which tokens attend to each other: ``"joint"`` all L tokens of a sample,
    ``"spatial"`` the S tokens of one frame, ``"temporal"`` the F tokens of one spatial position.

    Args:
        dim: Width D.
        heads: Attention heads.
        mlp_ratio: MLP hidden width over D.
        layout: ``"joint"``, ``"spatial"`` or ``"temporal"``.
        qk_norm: RMSNorm on queries and keys.
        context_dim: Width of context tokens (adds a cross-attention sub-layer), or None.
        eps: LayerNorm epsilon.
        backends: Preferred SDPA kernels (see :class:`~multidiff.nn.layers.Attention`).
        fused: Fused kernels in eager mode on CUDA (see :mod:`multidiff.nn.fused`).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        *,
        layout: str = "joint",
        qk_norm: bool = False,
        context_dim: int | None = None,
        eps: float = 1e-6,
        backends: tuple[str, ...] = (),
        fused: bool = True,
    ) -> None:
        super().__init__()
        if layout not in ("joint", "spatial", "temporal"):
            raise ValueError(f"DiTBlock layout must be joint, spatial or temporal, got {layout!r}")
        self.layout = layout
        self.eps = eps
        self.fused = fused
        self.ada = AdaLNModulation(dim, dim, 6)
        self.attn = Attention(dim, heads, qk_norm=qk_norm, backends=backends, fused=fused)
        self.cross: Attention | None = None
        self.cross_norm: nn.LayerNorm | None = None
        if context_dim is not None:
            self.cross_norm = nn.LayerNorm(dim, eps=eps)
            self.cross = Attention(dim, heads, context_dim=context_dim, qk_norm=qk_norm, backends=backends)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio)), approximate="tanh")

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        frames: int,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Tokens (B, L, D), frame-major for video (L = F·S).
            cond: Conditioning vector (B, D).
            frames: F, used by the spatial/temporal layouts (1 for images).
            rope: Rotary tables for this layout's token groups, or None.
            context: Context tokens (B, Lc, Dc) for cross-attention, or None to skip it.
            context_mask: Boolean (B, Lc), True = attend.

        Returns:
            (B, L, D).
        """
        B, L, D = x.shape
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(cond)  # 6 x (B, 1, D)
        h = ln_modulate(x, shift_a, scale_a, self.eps, fused=self.fused)  # (B, L, D)
        if self.layout == "joint":
            h = self.attn(h, rope=rope)  # (B, L, D)
        elif self.layout == "spatial":
            S = L // frames
            h = self.attn(h.reshape(B * frames, S, D), rope=rope)  # (B·F, S, D)
            h = h.reshape(B, L, D)  # (B, L, D)
        else:  # across frames, the tokens left where they lie (Attention.across_frames)
            h = self.attn.across_frames(h.view(B, frames, L // frames, D), rope=rope)  # (B, F, S, D)
            h = h.reshape(B, L, D)  # (B, L, D)
        x = gated_residual(x, gate_a, h, fused=self.fused)  # x + gate·h (B, L, D)
        if self.cross is not None and self.cross_norm is not None and context is not None:
            x = x + self.cross(self.cross_norm(x), context, mask=context_mask)  # (B, L, D)
        h = ln_modulate(x, shift_m, scale_m, self.eps, fused=self.fused)  # (B, L, D)
        x = gated_residual(x, gate_m, self.mlp(h), fused=self.fused)  # (B, L, D)
        return x


class DiT(PretrainedMixin, nn.Module):
    """Diffusion Transformer backbone following the multidiff contract.

    ``forward(x, c_noise, *, labels=None, context=None, context_mask=None, cond_channels=None)`` maps
    x (B, C, *spatial) to a tensor of the same spatial shape with ``out_channels`` channels.

    Args:
        config: The :class:`DiTConfig`.
    """

    config_class = DiTConfig

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        D = c.width
        self.patch_features = (c.in_channels + c.cond_channels) * math.prod(c.patch)
        self.x_embed = nn.Linear(self.patch_features, D)  # a strided conv written as a linear on patches
        self.noise_embed = NoiseEmbedding(D, c.noise_freq_dim, freq_shift=c.noise_freq_shift)
        self.label_embed = LabelEmbedding(c.num_classes, D) if c.num_classes is not None else None
        layouts = ["joint"] * c.depth
        if c.attention == "factorised":
            layouts = ["spatial" if i % 2 == 0 else "temporal" for i in range(c.depth)]
        self.blocks = nn.ModuleList(
            DiTBlock(
                D,
                c.heads,
                c.mlp_ratio,
                layout=lay,
                qk_norm=c.qk_norm,
                context_dim=c.context_dim,
                eps=c.norm_eps,
                backends=c.attention_backends,
                fused=c.fused_kernels,
            )
            for lay in layouts
        )
        self.final_ada = AdaLNModulation(D, D, 2)
        self.final_proj = nn.Linear(D, math.prod(c.patch) * c.out_ch)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT initialisation: Xavier-uniform linears, N(0, 0.02) embeddings, zero adaLN and output."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for lin in (self.noise_embed.fc1, self.noise_embed.fc2):
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada.proj.weight)
            nn.init.zeros_(block.ada.proj.bias)
        for lin in (self.final_ada.proj, self.final_proj):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def null_label(self) -> int | None:
        """Index of the null label for classifier-free guidance (None without labels)."""
        return self.config.num_classes

    def _patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(B, C, *spatial) padded to patch multiples -> tokens (B, L, P) with P ordered (C, p1, p2, ...)."""
        p = self.config.patch
        n = len(p)
        B, C = x.shape[:2]
        grid = tuple(s // q for s, q in zip(x.shape[2:], p))
        split = [B, C]
        for g, q in zip(grid, p):
            split += [g, q]
        x = x.reshape(split)  # (B, C, g1, p1, g2, p2, ...)
        perm = [0] + [2 + 2 * i for i in range(n)] + [1] + [3 + 2 * i for i in range(n)]
        x = x.permute(perm)  # (B, g1, g2, ..., C, p1, p2, ...)
        return x.reshape(B, math.prod(grid), -1), grid  # (B, L, P)

    def _unpatchify(self, t: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Tokens (B, L, P) with P ordered (p1, p2, ..., C) -> (B, C, *padded spatial)."""
        p = self.config.patch
        n = len(p)
        B = t.shape[0]
        C = self.config.out_ch
        t = t.reshape(B, *grid, *p, C)  # (B, g1, g2, ..., p1, p2, ..., C)
        perm = [0, 2 * n + 1]
        for i in range(n):
            perm += [1 + i, 1 + n + i]
        t = t.permute(perm)  # (B, C, g1, p1, g2, p2, ...)
        return t.reshape(B, C, *(g * q for g, q in zip(grid, p)))  # (B, C, *padded)

    def _rope(
        self, grid: tuple[int, ...], device: torch.device
    ) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Rotary tables for every block, built once per forward and shared by blocks of one layout."""
        c = self.config
        if c.pos_embed != "rope":
            return [None] * c.depth
        if c.attention == "joint":
            tables = rotary_tables(grid, c.head_dim, theta=c.rope_theta, device=device)  # 2 x (L, Dh/2)
            return [tables] * c.depth
        spatial = rotary_tables(grid[1:], c.head_dim, theta=c.rope_theta, device=device)  # 2 x (S, Dh/2)
        temporal = rotary_tables(grid[:1], c.head_dim, theta=c.rope_theta, device=device)  # 2 x (F, Dh/2)
        return [spatial if b.layout == "spatial" else temporal for b in self.blocks]

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cond_channels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the network output for noisy input ``x``.

        Args:
            x: (B, C, H, W) or (B, C, F, H, W), any size (padded to the patch internally).
            c_noise: (B,) real noise-level input.
            labels: (B,) int64 class labels; None means the null label (class models only).
            context: (B, Lc, Dc) context tokens for cross-attention; None skips cross-attention.
            context_mask: (B, Lc) bool, True = attend.
            cond_channels: (B, Cc, *spatial) extra channels, required when ``config.cond_channels > 0``.

        Returns:
            (B, out_channels, *spatial), the spatial size of x.
        """
        c = self.config
        if x.dim() != 2 + len(c.patch):
            raise ValueError(
                f"DiT with patch {c.patch} expects a {2 + len(c.patch)}-D input, got {tuple(x.shape)}"
            )
        if x.shape[1] != c.in_channels:
            raise ValueError(f"DiT expects {c.in_channels} input channels, got {x.shape[1]}")
        B = x.shape[0]
        spatial = tuple(x.shape[2:])
        if c.cond_channels:
            if cond_channels is None or tuple(cond_channels.shape) != (B, c.cond_channels, *spatial):
                got = None if cond_channels is None else tuple(cond_channels.shape)
                raise ValueError(
                    f"DiT needs cond_channels of shape {(B, c.cond_channels, *spatial)}, got {got}"
                )
            x = torch.cat([x, cond_channels.to(x.dtype)], dim=1)  # (B, C+Cc, *spatial)
        elif cond_channels is not None:
            raise ValueError("DiT got cond_channels but was built with cond_channels=0")
        pads = [(-s) % q for s, q in zip(spatial, c.patch)]
        if any(pads):
            x = F.pad(x, [v for pad in reversed(pads) for v in (0, pad)])  # (B, C', *padded)
        tokens, grid = self._patchify(x)  # (B, L, P), grid = spatial // patch
        h = self.x_embed(tokens)  # (B, L, D)
        if c.fp32_residual:
            h = h.float()  # (B, L, D)
        if c.pos_embed == "sincos":
            h = h + sincos_embedding(grid, c.width, device=h.device).to(h.dtype)  # (B, L, D)
        cond = self.noise_embed(c_noise)  # (B, D)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((B,), self.label_embed.null_label, device=x.device, dtype=torch.long)
            cond = cond + self.label_embed(labels)  # (B, D)
        elif labels is not None:
            raise ValueError("DiT got labels but was built with num_classes=None")
        if context is not None and c.context_dim is None:
            raise ValueError("DiT got context but was built with context_dim=None")
        frames = grid[0] if len(grid) == 3 else 1
        ropes = self._rope(grid, h.device)
        for block, rope in zip(self.blocks, ropes):
            if c.grad_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, cond, frames, rope, context, context_mask, use_reentrant=False)
            else:
                h = block(h, cond, frames, rope, context, context_mask)  # (B, L, D)
        shift, scale = self.final_ada(cond)  # 2 x (B, 1, D)
        h = ln_modulate(h, shift, scale, c.norm_eps, fused=c.fused_kernels)  # (B, L, D)
        out = self.final_proj(h)  # (B, L, prod(patch)·C_out)
        out = self._unpatchify(out, grid)  # (B, C_out, *padded)
        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
        return out[crop]  # (B, C_out, *spatial)


def _preset(width: int, depth: int, heads: int, p: int) -> DiTConfig:
    # The paper's class-conditional ImageNet models: 4-channel SD-VAE latents, 1000 classes, learned
    # variance (8 output channels), fixed sin-cos positions, ADM-style time features.
    return DiTConfig(
        in_channels=4,
        out_channels=8,
        patch=(p, p),
        width=width,
        depth=depth,
        heads=heads,
        num_classes=1000,
        pos_embed="sincos",
    )


DIT_PRESETS: dict[str, DiTConfig] = {
    f"DiT-{name}/{p}": _preset(w, d, h, p)
    for name, (w, d, h) in {
        "S": (384, 12, 6),
        "B": (768, 12, 12),
        "L": (1024, 24, 16),
        "XL": (1152, 28, 16),
    }.items()
    for p in (2, 4, 8)
}
"""DiT model sizes of Peebles and Xie 2023, Table 1 (S/B/L/XL) with patch 2, 4 or 8."""


def dit_from_preset(name: str, **overrides: object) -> DiT:
    """Build a DiT from a :data:`DIT_PRESETS` name (e.g. ``"DiT-XL/2"``), replacing any config fields.

    Example: ``dit_from_preset("DiT-B/2", num_classes=None, out_channels=None, pos_embed="rope")``.
    """
    if name not in DIT_PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; choose from {sorted(DIT_PRESETS)}")
    return DiT(dataclasses.replace(DIT_PRESETS[name], **overrides))  # type: ignore[arg-type]
