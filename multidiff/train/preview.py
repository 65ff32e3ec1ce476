"""Preview files written during training: mel spectrogram PNGs (imageio, no matplotlib) and wavs.

A recipe supplies its own preview callback (it knows the modality); these helpers write the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["colorize", "save_mel_png", "save_audio_previews"]

# Anchor colours of a dark-to-bright perceptual ramp (black, purple, red, orange, pale yellow).
_RAMP = np.array(
    [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64
)


def colorize(image: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map a 2-D float array to RGB uint8 ``[H, W, 3]`` through a dark-to-bright colour ramp.

    Args:
        image: ``[H, W]`` values.
        lo: Value mapped to the darkest colour (default: the minimum).
        hi: Value mapped to the brightest colour (default: the maximum).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"colorize expects a 2-D array, got shape {image.shape}")
    finite = np.isfinite(image)
    if lo is None:
        lo = float(image[finite].min()) if finite.any() else 0.0
    if hi is None:
        hi = float(image[finite].max()) if finite.any() else 1.0
    u = np.clip((np.where(finite, image, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * (len(_RAMP) - 1)
    i = np.minimum(u.astype(np.int64), len(_RAMP) - 2)
    w = (u - i)[..., None]
    rgb = (1 - w) * _RAMP[i] + w * _RAMP[i + 1]
    return np.round(rgb).astype(np.uint8)


def save_mel_png(mel: torch.Tensor | np.ndarray, path: str | os.PathLike[str], scale: int = 2) -> Path:
    """Write a log-mel ``[M, T]`` (or ``[C, M, T]``, channels stacked vertically) as a PNG.

    Low frequencies are at the bottom; each bin is ``scale`` pixels tall and wide.
    """
    import imageio.v3 as iio

    arr = mel.detach().float().cpu().numpy() if isinstance(mel, torch.Tensor) else np.asarray(mel)
    if arr.ndim == 3:
        arr = np.concatenate([c[::-1] for c in arr], axis=0)  # (C·M, T), each channel flipped
    elif arr.ndim == 2:
        arr = arr[::-1]
    else:
        raise ValueError(f"save_mel_png expects [M, T] or [C, M, T], got shape {arr.shape}")
    rgb = colorize(arr)
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, rgb)
    return path


def save_audio_previews(
    out_dir: str | os.PathLike[str],
    waves: torch.Tensor,
    sample_rate: int,
    mels: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``waves`` [B, C, N] as wavs (and ``mels`` [B, C, M, T] as PNGs) into ``out_dir``.

    Returns:
        The wav paths.
    """
    from multidiff.io import write_audio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [f"sample-{k:02d}" for k in range(waves.shape[0])]
    paths = []
    for k, name in enumerate(names):
        paths.append(write_audio(out / f"{name}.wav", waves[k].float().cpu().clamp(-1, 1), sample_rate))
        if mels is not None:
            save_mel_png(mels[k], out / f"{name}.png")
    return paths
