"""U-Net benchmark cases for ``benchmarks/train_throughput.py``: multidiff UNet vs diffusers.

Each case is ``case(device, tiny=False) -> dict(name, batch, ours, ref, step_ours, step_ref)``; the step
callables run one forward pass on pre-made random tensors (on ``device``) and return an MSE loss to a
random target. ``tiny=True`` shrinks models and inputs for a CPU smoke test.

- ``Mel-UNet-75M``: 1 x 80 x 256 mels, batch 64; ours is the ``mel-75M`` preset, the reference a
  diffusers ``UNet2DModel`` with the same widths (block_out_channels (128, 256, 256, 512), two
  layers per block, default blocks: attention with head width 8 at the three lower levels; 75.4M
  parameters).
- ``Video-UNet``: 4 x 16 x 32 x 32 video latents, batch 8, 77 context tokens of width 1024 for both;
  ours is the ``video-B`` preset, the reference a diffusers ``UNet3DConditionModel`` with
  block_out_channels (128, 256, 512, 512) and otherwise default settings.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multidiff.nn.unet import UNET_PRESETS, UNet  # noqa: E402

__all__ = ["UNET_CASES", "case_mel_unet", "case_video_unet"]


def case_mel_unet(device: str, tiny: bool = False) -> dict[str, Any]:
    """~75M U-Net on 1x80x256 mels, batch 64, vs diffusers UNet2DModel of the same widths."""
    from diffusers import UNet2DModel

    widths, batch, M, T = (128, 256, 256, 512), 64, 80, 256
    cfg = UNET_PRESETS["mel-75M"]
    if tiny:
        widths, batch, M, T = (32, 64), 2, 16, 24
        cfg = dataclasses.replace(cfg, channels=widths, attention_levels=(1,), norm_groups=8, head_dim=32)
    ours = UNet(cfg).to(device)
    ref_kwargs: dict[str, Any] = {}
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

    return dict(name="Mel-UNet-75M", batch=batch, ours=ours, ref=ref, step_ours=step_ours, step_ref=step_ref)


def case_video_unet(device: str, tiny: bool = False) -> dict[str, Any]:
    """Video U-Net (128-256-512-512) on 4x16x32x32, batch 8, vs diffusers UNet3DConditionModel."""
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

    return dict(name="Video-UNet", batch=batch, ours=ours, ref=ref, step_ours=step_ours, step_ref=step_ref)


case_mel_unet.case_name = "Mel-UNet-75M"  # type: ignore[attr-defined]
case_video_unet.case_name = "Video-UNet"  # type: ignore[attr-defined]
UNET_CASES = [case_mel_unet, case_video_unet]
