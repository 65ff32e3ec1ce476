"""U-Net benchmark cases for ``benchmarks/train_throughput.py``: multidiff UNet vs diffusers.

Each case is ``case(device, tiny=False) -> dict(name, batch, ours, ref, step_ours, step_ref)``; the step
callables run one forward pass on pre-made random tensors (on ``device``) and return an MSE loss to a
random target. ``tiny=True`` shrinks models and inputs for a CPU smoke test.

- ``Mel-UNet-75M``: 1 x 80 x 256 mels, batch 64; ours is the ``mel-75M`` preset (75.7M parameters),
  the reference a diffusers ``UNet2DModel`` with the same widths (block_out_channels
  (128, 256, 256, 512), two layers per block, attention blocks (head width 8) at the two lowest levels:
  74.0M parameters, the model of the 259 samples/s reference figure in shared/device/README.md).
- ``Video-UNet``: 4 x 16 x 32 x 32 video latents, batch 8, 77 context tokens of width 1024 for both;
  ours is the ``video-B`` preset, the reference a diffusers ``UNet3DConditionModel`` with
  block_out_channels (128, 256, 512, 512) and otherwise default settings.

Measured (H100 80GB HBM3, torch 2.11, diffusers 0.42.1, bf16 autocast, fused AdamW, compiled,
2026-11-27), with the earlier version of this file and of ``mel-75M`` (two residual blocks at every
level, nearest + 3x3 conv upsampling, 77.6M parameters, 815 GFLOP per sample):
Mel-UNet-75M ours 300.9 samples/s (245 TFLOP/s, peak 21.1 GiB) against 82.9 samples/s
(110 TFLOP/s, peak 26.6 GiB) for a 75.4M UNet2DModel with attention at three levels (the wrong
reference; the 74.0M one used now ran at 259 samples/s in the README's measurement);
Video-UNet ours 79.6 clips/s (86 TFLOP/s, peak 6.7 GiB) with 1085 GFLOP per clip; the compiled
diffusers UNet3DConditionModel had not finished compiling after ~4 minutes (README: 32.7 clips/s).
The current presets (upsampling in sub-pixel form; ``mel-75M`` with blocks (1, 1, 2, 2), 560 GFLOP
per sample) have not been timed on the GPU yet.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multidiff.nn.unet import UNET_PRESETS, UNet  # noqa: E402

__all__ = ["UNET_CASES", "case_mel_unet", "case_video_unet"]


def _variants(cfg: Any) -> dict[str, Callable[[], nn.Module]]:
    """Ours without the fused kernels, both ways with channels-last weights and activations, and with
    GroupNorm from per-channel statistics under torch.compile instead of ATen's (built when
    ``train_throughput.py --variants`` times them)."""
    plain = dataclasses.replace(cfg, fused_kernels=False)
    return {
        "plain_ops": lambda: UNet(plain),
        "channels_last": lambda: UNet(cfg).to(memory_format=torch.channels_last),
        "channels_last_plain": lambda: UNet(plain).to(memory_format=torch.channels_last),
        "by_channel_group_norm": lambda: _by_channel(UNet(cfg)),
    }


def _by_channel(model: UNet) -> UNet:
    """``model`` with every GroupNorm taking per-channel statistics under torch.compile (``by_channel``)."""
    from multidiff.nn.layers import GroupNorm

    for m in model.modules():
        if isinstance(m, GroupNorm):
            m.by_channel = True
    return model


def case_mel_unet(device: str, tiny: bool = False, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """~75M U-Net on 1x80x256 mels, batch 64, vs diffusers UNet2DModel of the same widths.

    ``overrides`` replaces fields of our config (for probing variants).
    """
    from diffusers import UNet2DModel

    widths, batch, M, T = (128, 256, 256, 512), 64, 80, 256
    cfg = UNET_PRESETS["mel-75M"]
    if tiny:
        widths, batch, M, T = (32, 64), 2, 16, 24
        cfg = dataclasses.replace(
            cfg, channels=widths, num_res_blocks=1, attention_levels=(1,), norm_groups=8, head_dim=32
        )
    cfg = dataclasses.replace(cfg, **(overrides or {}))
    ours = UNet(cfg).to(device)
    ref_kwargs: dict[str, Any] = dict(
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )
    if tiny:
        ref_kwargs = dict(
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
    ref = UNet2DModel(
        sample_size=(M, T), in_channels=1, out_channels=1, block_out_channels=widths, **ref_kwargs
    ).to(device)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 1, M, T, device=device, generator=g)
    target = torch.randn(batch, 1, M, T, device=device, generator=g)
    t = torch.rand(batch, device=device, generator=g) * 999  # fractional VP timesteps

    def step_ours(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, t).float(), target)

    def step_ref(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, t).sample.float(), target)

    return dict(
        name="Mel-UNet-75M",
        batch=batch,
        ours=ours,
        ref=ref,
        step_ours=step_ours,
        step_ref=step_ref,
        variants=_variants(cfg),
    )


def case_video_unet(
    device: str, tiny: bool = False, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Video U-Net (128-256-512-512) on 4x16x32x32, batch 8, vs diffusers UNet3DConditionModel.

    ``overrides`` replaces fields of our config (for probing variants).
    """
    from diffusers import UNet3DConditionModel

    widths, batch, frames, size, ctx_len, ctx_dim = (128, 256, 512, 512), 8, 16, 32, 77, 1024
    cfg = UNET_PRESETS["video-B"]
    ref_kwargs: dict[str, Any] = {}
    if tiny:
        widths, batch, frames, size, ctx_len, ctx_dim = (32, 64), 2, 3, 8, 5, 16
        cfg = dataclasses.replace(
            cfg, channels=widths, attention_levels=(1,), norm_groups=8, head_dim=16, context_dim=ctx_dim
        )
        ref_kwargs = dict(
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            norm_num_groups=8,
            attention_head_dim=16,
        )
    cfg = dataclasses.replace(cfg, **(overrides or {}))
    ours = UNet(cfg).to(device)
    ref = UNet3DConditionModel(
        sample_size=size,
        in_channels=4,
        out_channels=4,
        block_out_channels=widths,
        cross_attention_dim=ctx_dim,
        **ref_kwargs,
    ).to(device)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 4, frames, size, size, device=device, generator=g)
    target = torch.randn(batch, 4, frames, size, size, device=device, generator=g)
    context = torch.randn(batch, ctx_len, ctx_dim, device=device, generator=g)
    t = torch.rand(batch, device=device, generator=g) * 999

    def step_ours(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, t, context=context).float(), target)

    def step_ref(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, t, encoder_hidden_states=context).sample.float(), target)

    return dict(
        name="Video-UNet",
        batch=batch,
        ours=ours,
        ref=ref,
        step_ours=step_ours,
        step_ref=step_ref,
        variants=_variants(cfg),
    )


case_mel_unet.case_name = "Mel-UNet-75M"  # type: ignore[attr-defined]
case_video_unet.case_name = "Video-UNet"  # type: ignore[attr-defined]
UNET_CASES = [case_mel_unet, case_video_unet]
