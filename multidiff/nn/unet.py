"""U-Net backbone for 2-D inputs (images, latents, mel spectrograms) and video latents.

The architecture is the ADM U-Net (Dhariwal and Nichol 2021, "Diffusion Models Beat GANs on Image
Synthesis", Sec. 3): residual blocks whose second GroupNorm is modulated by the noise (and label)
embedding with a per-channel scale and shift ("adaptive group normalisation", their Eq. 3),
self-attention at chosen resolutions, a skip connection from every down-path block to the up path.
Cross-attention to context tokens follows Rombach et al. 2022 ("High-Resolution Image Synthesis with
Latent Diffusion Models", Sec. 3.3). Downsampling is a stride-2 convolution; upsampling is ADM's
nearest-neighbour doubling + 3x3 convolution computed in its cheaper sub-pixel form, a 4x4 stride-2
transposed convolution initialised to equal it (:class:`Upsample`).

Video ([B, C, F, H, W]) uses the factorised space-time U-Net of Ho et al. 2022 ("Video Diffusion
Models", Sec. 3): every 2-D layer is applied to each frame independently, and frames mix only through
temporal layers inserted after the spatial ones: a temporal convolution after each residual block
(the pseudo-3-D convolution of Singer et al. 2022, "Make-A-Video", Sec. 3.2) and temporal attention
(with rotary frame positions, so any frame count works) at the attention levels. Down- and upsampling
are spatial only; every temporal layer starts as the identity (zero-initialised output projection), so
a video U-Net starts as the per-frame image U-Net.

Any spatial size works: the input is padded (zeros, bottom/right) to a multiple of 2**(levels-1) and
the output cropped back, so an 80 x 37 mel or a 30 x 34 latent passes through unchanged in shape.

Inside ``forward`` every activation is laid out as ``(B·F, C, H, W)`` (F = 1 for 2-D inputs). The
blocks are in :mod:`multidiff.nn.unet_blocks`; this module assembles them.

Axis letters: B batch, C channels, F frames, H height, W width, L tokens, D width, E embedding width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from multidiff.nn.io import PretrainedMixin
from multidiff.nn.layers import (
    Attention,
    Downsample,
    GroupNorm,
    LabelEmbedding,
    NoiseEmbedding,
    Upsample,
    nearest_conv_to_transposed,
    rotary_tables,
)
from multidiff.nn.unet_blocks import AttentionBlock, ResBlock, TemporalAttention, TemporalConv, UNetLayer

__all__ = [
    "UNetConfig",
    "UNet",
    "ResBlock",
    "TemporalConv",
    "AttentionBlock",
    "TemporalAttention",
    "Upsample",
    "Downsample",
    "nearest_conv_to_transposed",
    "UNET_PRESETS",
    "unet_from_preset",
]


def _as_tuple(value: object) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)  # type: ignore[union-attr]


@dataclass(frozen=True)
class UNetConfig:
    """Settings of a :class:`UNet`.

    Attributes:
        in_channels: Channels C of the noisy input x.
        out_channels: Output channels (None: same as ``in_channels``).
        channels: Width of each resolution level, highest resolution first; there are
            ``len(channels) - 1`` spatial downsamplings by 2.
        num_res_blocks: Residual blocks per level on the down path (the up path has one more, as in
            ADM); one int for every level, or a tuple with one entry per level.
        attention_levels: Levels (indices into ``channels``) with spatial self-attention (and
            cross-attention when ``context_dim`` is set).
        mid_attention: Self-attention (and cross-attention) in the middle block.
        head_dim: Width of one attention head; each attention level has ``channels[i] // head_dim`` heads.
        mlp_ratio: Hidden width over D of an MLP after the attention sub-layers (0: none, as ADM; 4 gives
            the transformer block of latent diffusion).
        qk_norm: RMSNorm on queries and keys (Dehghani et al. 2023).
        dropout: Dropout before the second convolution of each residual block.
        num_classes: Number of class labels (the null label is index ``num_classes``); None for none.
        context_dim: Width of context tokens for cross-attention at the attention levels; None for none.
        cond_channels: Extra input channels concatenated to x (e.g. known frames or mel regions plus
            their mask).
        video: Inputs are video (B, C, F, H, W): adds temporal convolutions and temporal attention.
        temporal_attention_levels: Levels with temporal attention (video only); None means
            ``attention_levels``. The middle block has temporal attention when ``mid_attention`` is set.
        temporal_kernel: Frame-axis kernel of the temporal convolutions (odd).
        emb_dim: Width E of the noise embedding (None: ``4 * channels[0]``, as ADM).
        noise_freq_dim: Sinusoidal features of ``c_noise``.
        norm_groups: GroupNorm groups (every level width must be a multiple).
        norm_eps: GroupNorm and LayerNorm epsilon.
        rope_theta: Base of the rotary frame-position frequencies of temporal attention.
        grad_checkpointing: Recompute block activations in the backward pass.
        fused_kernels: In eager mode on CUDA, GroupNorm with its modulation and SiLU and the rotary
            embeddings run as Triton kernels (:mod:`multidiff.nn.fused`), and temporal attention
            does not gather frames; False keeps the PyTorch ops and the gathering.
    """

    in_channels: int = 4
    out_channels: int | None = None
    channels: tuple[int, ...] = (128, 256, 256, 512)
    num_res_blocks: int | tuple[int, ...] = 2
    attention_levels: tuple[int, ...] = (2, 3)
    mid_attention: bool = True
    head_dim: int = 64
    mlp_ratio: float = 0.0
    qk_norm: bool = False
    dropout: float = 0.0
    num_classes: int | None = None
    context_dim: int | None = None
    cond_channels: int = 0
    video: bool = False
    temporal_attention_levels: tuple[int, ...] | None = None
    temporal_kernel: int = 3
    emb_dim: int | None = None
    noise_freq_dim: int = 256
    norm_groups: int = 32
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    grad_checkpointing: bool = False
    fused_kernels: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "channels", _as_tuple(self.channels))
        set_(self, "attention_levels", _as_tuple(self.attention_levels))
        if not isinstance(self.num_res_blocks, int):
            set_(self, "num_res_blocks", _as_tuple(self.num_res_blocks))
        nres = self.blocks_per_level
        if self.temporal_attention_levels is not None:
            set_(self, "temporal_attention_levels", _as_tuple(self.temporal_attention_levels))
        if self.in_channels <= 0:
            raise ValueError(f"UNetConfig.in_channels must be positive, got {self.in_channels}")
        if self.out_channels is not None and self.out_channels <= 0:
            raise ValueError(f"UNetConfig.out_channels must be positive or None, got {self.out_channels}")
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError(f"UNetConfig.channels must be non-empty and positive, got {self.channels}")
        if len(nres) != len(self.channels) or any(n <= 0 for n in nres):
            raise ValueError(
                f"UNetConfig.num_res_blocks must be one positive int or one per level "
                f"({len(self.channels)}), got {nres}"
            )
        if self.norm_groups <= 0 or any(c % self.norm_groups for c in self.channels):
            raise ValueError(
                f"UNetConfig.channels {self.channels} must all be multiples of norm_groups={self.norm_groups}"
            )
        levels = range(len(self.channels))
        for name in ("attention_levels", "temporal_attention_levels"):
            value = getattr(self, name)
            if value is not None and any(lvl not in levels for lvl in value):
                raise ValueError(
                    f"UNetConfig.{name}={value} names a level outside 0..{len(self.channels) - 1}"
                )
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(f"UNetConfig.head_dim must be positive and even, got {self.head_dim}")
        attn_widths = [self.channels[i] for i in self.attn_levels_all] + (
            [self.channels[-1]] if self.mid_attention else []
        )
        bad = [w for w in attn_widths if w % self.head_dim]
        if bad:
            raise ValueError(
                f"UNetConfig: attention widths {bad} are not multiples of head_dim={self.head_dim}"
            )
        if self.mlp_ratio < 0:
            raise ValueError(f"UNetConfig.mlp_ratio must be >= 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes <= 0:
            raise ValueError(f"UNetConfig.num_classes must be positive or None, got {self.num_classes}")
        if self.context_dim is not None and self.context_dim <= 0:
            raise ValueError(f"UNetConfig.context_dim must be positive or None, got {self.context_dim}")
        if self.cond_channels < 0:
            raise ValueError(f"UNetConfig.cond_channels must be >= 0, got {self.cond_channels}")
        if self.temporal_kernel <= 0 or self.temporal_kernel % 2 == 0:
            raise ValueError(
                f"UNetConfig.temporal_kernel must be positive and odd, got {self.temporal_kernel}"
            )
        if self.temporal_attention_levels is not None and not self.video:
            raise ValueError("UNetConfig.temporal_attention_levels is set but video=False")
        if self.emb_dim is not None and self.emb_dim <= 0:
            raise ValueError(f"UNetConfig.emb_dim must be positive or None, got {self.emb_dim}")
        if self.noise_freq_dim <= 0 or self.noise_freq_dim % 2:
            raise ValueError(
                f"UNetConfig.noise_freq_dim must be positive and even, got {self.noise_freq_dim}"
            )
        if self.norm_eps <= 0:
            raise ValueError(f"UNetConfig.norm_eps must be positive, got {self.norm_eps}")

    @property
    def blocks_per_level(self) -> tuple[int, ...]:
        """``num_res_blocks`` as one entry per level."""
        if isinstance(self.num_res_blocks, int):
            return (self.num_res_blocks,) * len(self.channels)
        return self.num_res_blocks

    @property
    def out_ch(self) -> int:
        """Output channels with the default applied."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def emb_width(self) -> int:
        """Width E of the noise embedding with the default applied."""
        return 4 * self.channels[0] if self.emb_dim is None else self.emb_dim

    @property
    def temporal_levels(self) -> tuple[int, ...]:
        """Levels with temporal attention (empty for 2-D models)."""
        if not self.video:
            return ()
        return (
            self.attention_levels
            if self.temporal_attention_levels is None
            else self.temporal_attention_levels
        )

    @property
    def attn_levels_all(self) -> tuple[int, ...]:
        """Levels with any attention layer (spatial or temporal), sorted."""
        return tuple(sorted(set(self.attention_levels) | set(self.temporal_levels)))

    @property
    def multiple(self) -> int:
        """Spatial sizes are padded internally to a multiple of this (2**downsamplings)."""
        return 2 ** (len(self.channels) - 1)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class UNet(PretrainedMixin, nn.Module):
    """U-Net backbone following the multidiff contract, for 2-D inputs or video.

    ``forward(x, c_noise, *, labels=None, context=None, context_mask=None, cond_channels=None)`` maps
    x (B, C, H, W) (or (B, C, F, H, W) with ``config.video``) to a tensor of the same spatial shape
    with ``out_channels`` channels. The output convolution starts at zero.

    Args:
        config: The :class:`UNetConfig`.
    """

    config_class = UNetConfig

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        E = c.emb_width
        self.noise_embed = NoiseEmbedding(E, c.noise_freq_dim)
        self.label_embed = LabelEmbedding(c.num_classes, E) if c.num_classes is not None else None
        self.conv_in = nn.Conv2d(c.in_channels + c.cond_channels, c.channels[0], 3, padding=1)

        def layer(i: int, cin: int, cout: int) -> UNetLayer:
            return UNetLayer(
                cin,
                cout,
                c,
                attention=i in c.attention_levels,
                temporal=c.video,
                temporal_attention=i in c.temporal_levels,
            )

        self.down = nn.ModuleList()
        skip_ch = [c.channels[0]]
        ch = c.channels[0]
        for i, width in enumerate(c.channels):
            for _ in range(c.blocks_per_level[i]):
                self.down.append(layer(i, ch, width))
                ch = width
                skip_ch.append(ch)
            if i < len(c.channels) - 1:
                self.down.append(Downsample(ch))
                skip_ch.append(ch)
        # Middle: residual block with the attention layers, then a plain one (ADM: res, attn, res).
        mid_attn = c.mid_attention
        self.mid = nn.ModuleList(
            [
                UNetLayer(
                    ch, ch, c, attention=mid_attn, temporal=c.video, temporal_attention=mid_attn and c.video
                ),
                UNetLayer(ch, ch, c, attention=False, temporal=c.video, temporal_attention=False),
            ]
        )
        self.up = nn.ModuleList()
        for i in reversed(range(len(c.channels))):
            width = c.channels[i]
            for j in range(c.blocks_per_level[i] + 1):
                self.up.append(layer(i, ch + skip_ch.pop(), width))
                ch = width
                if i > 0 and j == c.blocks_per_level[i]:
                    self.up.append(Upsample(ch))
        self.norm_out = GroupNorm(c.norm_groups, ch, eps=c.norm_eps)
        self.conv_out = nn.Conv2d(ch, c.out_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        for m in self.modules():  # the GroupNorm and Attention layers' Triton kernels
            if isinstance(m, (GroupNorm, Attention)):
                m.fused = c.fused_kernels

    @property
    def null_label(self) -> int | None:
        """Index of the null label for classifier-free guidance (None without labels)."""
        return self.config.num_classes

    def _run(self, layer: nn.Module, h: torch.Tensor, *args: object) -> torch.Tensor:
        if self.config.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, h, *args, use_reentrant=False)  # type: ignore[no-any-return]
        return layer(h, *args)  # type: ignore[no-any-return]

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``torch.compile`` this U-Net in place (``nn.Module.compile``), with Inductor's layout
        optimisation forced on: every convolution and the work between them in channels-last.

        Inductor turns that optimisation off by itself for any graph with a convolution whose input
        has twice its output's channels (``decide_layout_opt`` in ``torch/_inductor/graph.py``), which
        every U-Net decoder's skip concatenation has. cuDNN's convolutions then convert each NCHW input
        and output to NHWC and back: 26% of the mel U-Net's compiled training step on an H200, which
        forcing the optimisation removes (33.5% of the matmul ceiling to 40.2%; the video U-Net in
        CUDA graphs 18.8% to 21.8%: ``benchmarks/RESULTS.md``, call 23). The weights stay NCHW
        (Inductor lays them out in the graph, with their bf16 cast), so checkpoints are unchanged.

        Takes ``torch.compile``'s arguments; ``mode`` becomes its Inductor options (the two cannot
        both be given to ``torch.compile``), and ``options`` given here win over this default.
        """
        if kwargs.get("backend", "inductor") == "inductor":
            from torch._inductor import list_mode_options

            mode = kwargs.pop("mode", None) or "default"
            kwargs["options"] = {
                **list_mode_options(mode),
                "force_layout_optimization": True,
                **(kwargs.get("options") or {}),
            }
        super().compile(*args, **kwargs)

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
            x: (B, C, H, W), or (B, C, F, H, W) for a video model; any H, W and F.
            c_noise: (B,) real noise-level input.
            labels: (B,) int64 class labels; None means the null label (class models only).
            context: (B, Lc, Dc) context tokens for cross-attention; None skips cross-attention.
            context_mask: (B, Lc) bool, True = attend; None attends to every token.
            cond_channels: (B, Cc, *spatial) extra channels, required when ``config.cond_channels > 0``.

        Returns:
            (B, out_channels, *spatial), the shape of x apart from the channels.
        """
        c = self.config
        ndim = 5 if c.video else 4
        if x.dim() != ndim:
            raise ValueError(f"UNet(video={c.video}) expects a {ndim}-D input, got shape {tuple(x.shape)}")
        if x.shape[1] != c.in_channels:
            raise ValueError(f"UNet expects {c.in_channels} input channels, got {x.shape[1]}")
        B = x.shape[0]
        spatial = tuple(x.shape[2:])
        if c.cond_channels:
            if cond_channels is None or tuple(cond_channels.shape) != (B, c.cond_channels, *spatial):
                got = None if cond_channels is None else tuple(cond_channels.shape)
                raise ValueError(
                    f"UNet needs cond_channels of shape {(B, c.cond_channels, *spatial)}, got {got}"
                )
            x = torch.cat([x, cond_channels.to(x.dtype)], dim=1)  # (B, C+Cc, *spatial)
        elif cond_channels is not None:
            raise ValueError("UNet got cond_channels but was built with cond_channels=0")
        if context is not None and c.context_dim is None:
            raise ValueError("UNet got context but was built with context_dim=None")
        if context_mask is not None and context is None:
            raise ValueError("UNet got context_mask without context")

        frames = spatial[0] if c.video else 1
        H, W = spatial[-2:]
        if c.video:
            x = x.transpose(1, 2).reshape(B * frames, x.shape[1], H, W)  # (B·F, C', H, W)
        m = c.multiple
        pad_h, pad_w = (-H) % m, (-W) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # (B·F, C', H', W')

        emb = self.noise_embed(c_noise)  # (B, E)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((B,), self.label_embed.null_label, device=x.device, dtype=torch.long)
            emb = emb + self.label_embed(labels)  # (B, E)
        elif labels is not None:
            raise ValueError("UNet got labels but was built with num_classes=None")
        emb = F.silu(emb)  # (B, E), shared by every residual block
        if c.video:
            emb = emb.repeat_interleave(frames, dim=0)  # (B·F, E)
        rope = None
        if c.video:
            rope = rotary_tables((frames,), c.head_dim, theta=c.rope_theta, device=x.device)  # 2 x (F, Dh/2)
        args = (emb, frames, context, context_mask, rope)

        h = self.conv_in(x)  # (B·F, C0, H', W')
        skips = [h]
        for block in self.down:
            if isinstance(block, Downsample):
                h = block(h)  # (B·F, C, H/2, W/2)
            else:
                h = self._run(block, h, *args)  # (B·F, C_i, H_i, W_i)
            skips.append(h)
        for block in self.mid:
            h = self._run(block, h, *args)  # (B·F, C_last, H_last, W_last)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)  # (B·F, C, 2H, 2W)
            else:
                h = torch.cat([h, skips.pop()], dim=1)  # (B·F, C + C_skip, H_i, W_i)
                h = self._run(block, h, *args)  # (B·F, C_i, H_i, W_i)
        h = self.conv_out(self.norm_out.silu(h))  # (B·F, C_out, H', W')
        h = h[:, :, :H, :W]  # (B·F, C_out, H, W)
        if c.video:
            h = h.reshape(B, frames, c.out_ch, H, W).transpose(1, 2)  # (B, C_out, F, H, W)
        return h


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


UNET_PRESETS: dict[str, UNetConfig] = {
    # 1 x 80 x T mel spectrograms, ~76M parameters: the widths of a diffusers UNet2DModel with
    # block_out_channels (128, 256, 256, 512). Attention (head width 64) at the two lowest resolutions
    # (20 x T/4 and 10 x T/8 for 80 mel bins) and in the middle; one residual block per level on the
    # down path at the two high resolutions, two at the low ones: parameters shifted from high to low
    # resolution as in the Efficient U-Net of Imagen (Saharia et al. 2022, Appendix B.1), which costs
    # 560 GFLOP per training sample (forward + backward) instead of 750 with two blocks everywhere.
    "mel-75M": UNetConfig(
        in_channels=1,
        channels=(128, 256, 256, 512),
        num_res_blocks=(1, 1, 2, 2),
        attention_levels=(2, 3),
    ),
    # A smaller mel model for quick experiments (~19M parameters).
    "mel-S": UNetConfig(
        in_channels=1,
        channels=(64, 128, 128, 256),
        num_res_blocks=(1, 1, 2, 2),
        attention_levels=(3,),
    ),
    # 4-channel image VAE latents (e.g. 32 x 32 for 256^2 images), class-conditional, ADM-like (~70M).
    "latent-B": UNetConfig(
        in_channels=4,
        channels=(128, 256, 512),
        num_res_blocks=2,
        attention_levels=(1, 2),
        num_classes=1000,
    ),
    # Video latents 4 x F x 32 x 32 with text context (1024-wide tokens), ~142M: widths of a diffusers
    # UNet3DConditionModel(block_out_channels=(128, 256, 512, 512)); spatial, cross and temporal
    # attention at 16 x 16 and 8 x 8 and in the middle, temporal convolutions everywhere.
    "video-B": UNetConfig(
        in_channels=4,
        channels=(128, 256, 512, 512),
        num_res_blocks=2,
        attention_levels=(1, 2),
        context_dim=1024,
        video=True,
    ),
}
"""Named U-Net configurations; see :func:`unet_from_preset`."""


def unet_from_preset(name: str, **overrides: object) -> UNet:
    """Build a U-Net from a :data:`UNET_PRESETS` name, replacing any config fields.

    Example: ``unet_from_preset("mel-75M", num_classes=10, cond_channels=2)``.
    """
    if name not in UNET_PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; choose from {sorted(UNET_PRESETS)}")
    return UNet(dataclasses.replace(UNET_PRESETS[name], **overrides))  # type: ignore[arg-type]
