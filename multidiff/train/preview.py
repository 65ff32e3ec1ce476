"""Preview files written during training: wavs with mel spectrogram PNGs, image grids, video GIFs and strips.

A recipe supplies its own preview callback (it knows the modality); these helpers write the files of one
preview folder (``RUN/previews/step-NNNNNNNN/``):

* audio: ``sample-KK.wav`` and ``sample-KK.png`` (the model's mel, axes in seconds and Hz, colour bar in
  dB, when the mel settings are given) and ``grid.png`` (those plots one above the other);
* images: ``sample-K.png`` and ``grid.png``;
* video: ``sample-K.gif``, ``grid.gif`` (all clips side by side) and ``strip.png`` (one row of frames per
  clip).

Pictures are drawn by :mod:`multidiff.plots` (pillow; no matplotlib).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multidiff.plots import colorize, image_grid, mel_png, video_grid, video_strip

__all__ = ["colorize", "save_mel_png", "save_audio_previews", "save_image_previews", "save_video_previews"]


def _grid_scale(height: int) -> int:
    """Pixel repetition for grid pictures of small training resolutions (16 px tiles become 64 px)."""
    return max(1, 64 // max(height, 1))


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
    *,
    spec: Any = None,
) -> list[Path]:
    """Write ``waves`` [B, C, N] as wavs (and ``mels`` [B, C, M, T], natural-log mels, as PNGs) into
    ``out_dir``. With ``spec`` (the :class:`~multidiff.modalities.mel.MelSpec` of the mels) each PNG has axes
    in seconds and Hz and a colour bar in dB, and ``grid.png`` stacks them; without it the PNGs are the bare
    mel bins (:func:`save_mel_png`).

    Returns:
        The wav paths.
    """
    from multidiff.io import write_audio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [f"sample-{k:02d}" for k in range(waves.shape[0])]
    paths, plots = [], []
    for k, name in enumerate(names):
        paths.append(write_audio(out / f"{name}.wav", waves[k].float().cpu().clamp(-1, 1), sample_rate))
        if mels is not None and spec is not None:
            plots.append(mel_png(mels[k], spec, out / f"{name}.png", title=name, size=(360, 140)).path)
        elif mels is not None:
            save_mel_png(mels[k], out / f"{name}.png")
    if plots:
        _stack_pngs(plots, out / "grid.png")
    return paths


def _stack_pngs(paths: Sequence[Path], dest: Path) -> Path:
    """Pictures one above the other (same widths) in one PNG."""
    import imageio.v3 as iio

    images = [iio.imread(p)[..., :3] for p in paths]
    width = max(im.shape[1] for im in images)
    padded = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255) for im in images]
    iio.imwrite(dest, np.concatenate(padded, axis=0))
    return dest


def save_image_previews(out_dir: str | os.PathLike[str], images: torch.Tensor | np.ndarray) -> list[Path]:
    """Write uint8 ``images`` [B, H, W, C] as ``sample-K.png`` and all of them as ``grid.png`` (small images
    enlarged, each pixel a square) into ``out_dir``; returns the sample paths."""
    from multidiff.io import write_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images)
    paths = [write_image(out / f"sample-{k}.png", arr[k]) for k in range(arr.shape[0])]
    write_image(out / "grid.png", image_grid(arr, scale=_grid_scale(arr.shape[1])))
    return paths


def save_video_previews(
    out_dir: str | os.PathLike[str], videos: torch.Tensor | np.ndarray, fps: float = 8.0
) -> list[Path]:
    """Write uint8 ``videos`` [B, F, H, W, C] as ``sample-K.gif``, all clips side by side as ``grid.gif``
    and ``strip.png`` (a row of evenly spaced frames per clip) into ``out_dir``; returns the sample paths."""
    from multidiff.io import write_image, write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(videos.cpu() if isinstance(videos, torch.Tensor) else videos)
    paths = [write_video(out / f"sample-{k}.gif", arr[k], fps=fps) for k in range(arr.shape[0])]
    scale = _grid_scale(arr.shape[2])
    write_video(out / "grid.gif", video_grid(arr, scale=scale), fps=fps)
    write_image(out / "strip.png", video_strip(arr, scale=scale))
    return paths
