"""Small models and media the tests build in code (nothing is downloaded)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch


def tiny_vae(seed: int = 0, channels: Sequence[int] = (8, 16)):
    """A small random diffusers ``AutoencoderKL`` (4 latent channels, downsampling 2**(levels-1))."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def write_tones(root: Path, freqs: Sequence[float], seconds: float = 0.375, sample_rate: int = 16000) -> Path:
    """``root/<k>.wav``: a sine tone per frequency (created folder), amplitude 0.3."""
    from multidiff.io import write_audio

    root.mkdir(parents=True, exist_ok=True)
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    for k, f in enumerate(freqs):
        write_audio(root / f"{k}.wav", (0.3 * torch.sin(2 * math.pi * f * t)).float(), sample_rate)
    return root
