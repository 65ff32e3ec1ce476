"""A dataset over a folder of videos: probe once, skip bad files loudly, draw clips deterministically.

Every file (mp4, m4v, mov, mkv, webm, avi, gif) is probed once at construction: its frames are counted
by decoding. Empty, unreadable, non-video, truncated (fewer frames decode than the container announces)
and too-short files (fewer than ``frames`` frames at the target rate) are skipped: each gets a
:class:`~multidiff.data.common.SkippedFileWarning` naming the file and the reason (the first
``max_warnings``), a summary warning gives the count, and ``dataset.skipped`` keeps every
``(path, reason)``. Frames of any size (odd, tiny, other aspect ratios) are resized to cover the
training size and cropped. The clip start and the crop depend only on ``(seed, epoch, index)``, so a
resumed run sees exactly the same data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidiff.data.common import (
    LABEL_MODES,
    MediaFolder,
    SkippedFileWarning,
    crop_offsets,
    file_key,
    load_or_build,
    resize_and_crop,
    resize_frames,
    resized_size,
)
from multidiff.io import (
    VIDEO_EXTENSIONS,
    VideoFileError,
    VideoInfo,
    num_resampled_frames,
    probe_video,
    read_video,
)
from multidiff.modalities.image import ImageAdapter, to_pixels

__all__ = [
    "SkippedFileWarning",
    "VideoFolder",
    "VideoFolderConfig",
    "as_image_adapter",
    "checked_cache_adapter",
    "parse_size",
]

_CROPS = ("center", "random")
# A file is truncated when fewer than this share of the frames its container announces decode.
_TRUNCATED_SHARE = 0.9


def parse_size(size: int | tuple[int, int] | list[int], owner: str) -> tuple[int, int]:
    """``64`` or ``(64, 96)`` -> ``(height, width)``; raises ValueError naming ``owner``."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"{owner}.size must be a positive int or (height, width), got {size!r}")
    return (int(size[0]), int(size[1]))


def checked_cache_adapter(
    adapter: nn.Module | None, cache_dir: str | os.PathLike[str] | None, crop: str, size: tuple[int, int]
) -> ImageAdapter | None:
    """The dataset's adapter, after checking that a latent cache can work with these settings.

    Raises:
        ValueError: a cache without an adapter, with a random crop, or with posterior sampling (which one
            cached sample would freeze); or a size that does not suit the VAE.
    """
    adapter = as_image_adapter(adapter)
    if cache_dir is not None and adapter is None:
        raise ValueError("cache_dir needs an adapter (adapter=...) to encode and key the cache")
    if cache_dir is not None and crop != "center":
        raise ValueError("a latent cache needs crop='center' (a random crop changes the pixels every epoch)")
    if adapter is not None:
        if adapter.config.sample_posterior and cache_dir is not None:
            raise ValueError("a latent cache would freeze one posterior sample; use sample_posterior=False")
        adapter.latent_shape(*size)  # the size must suit the VAE
    return adapter


def as_image_adapter(adapter: nn.Module | None) -> ImageAdapter | None:
    """The per-frame :class:`ImageAdapter` of an image or video adapter (None stays None)."""
    if adapter is None or isinstance(adapter, ImageAdapter):
        return adapter
    image = getattr(adapter, "image", None)
    if isinstance(image, ImageAdapter):
        return image
    raise ValueError(f"expected an ImageAdapter or VideoAdapter, got {type(adapter).__name__}")


@dataclass(frozen=True)
class VideoFolderConfig:
    """How a :class:`VideoFolder` selects, decodes and crops its clips.

    Attributes:
        frames: Frames F per clip.
        fps: Read every file at this frame rate (frames dropped or repeated by time); None keeps each
            file's own rate.
        stride: Keep every ``stride``-th frame instead (exclusive with ``fps``).
        size: Training size, ``(height, width)`` or one int for a square.
        crop: ``"center"`` or ``"random"`` (spatial crop after resizing to cover ``size``).
        random_clip: Random clip start (deterministic in seed, epoch, index); False starts at frame 0.
        labels: ``"auto"`` (metadata.csv if present, else subfolder names if every file is in one, else
            none), ``"folders"``, ``"metadata"`` or ``"none"``.
        extensions: File suffixes to consider (lower case).
        seed: Base seed of clip starts and crops.
        return_frames: Include the frames in items (may be False when a latent cache is used).
    """

    frames: int = 16
    fps: float | None = None
    stride: int | None = None
    size: int | tuple[int, int] = 64
    crop: str = "center"
    random_clip: bool = True
    labels: str = "auto"
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    seed: int = 0
    return_frames: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise ValueError(f"VideoFolderConfig.frames must be a positive int, got {self.frames!r}")
        if self.fps is not None and self.stride is not None:
            raise ValueError(
                f"VideoFolderConfig: set fps or stride, not both (fps={self.fps!r}, stride={self.stride!r})"
            )
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ValueError(f"VideoFolderConfig.fps must be positive or None, got {self.fps!r}")
        if self.stride is not None and (
            isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1
        ):
            raise ValueError(f"VideoFolderConfig.stride must be a positive int or None, got {self.stride!r}")
        object.__setattr__(self, "size", parse_size(self.size, "VideoFolderConfig"))
        if self.crop not in _CROPS:
            raise ValueError(f"VideoFolderConfig.crop must be one of {_CROPS}, got {self.crop!r}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"VideoFolderConfig.labels must be one of {LABEL_MODES}, got {self.labels!r}")
        object.__setattr__(self, "extensions", tuple(e.lower() for e in self.extensions))
        if not self.extensions or not all(e.startswith(".") for e in self.extensions):
            raise ValueError(
                f"VideoFolderConfig.extensions must be suffixes like '.mp4', got {self.extensions!r}"
            )


@dataclass(frozen=True)
class VideoEntryInfo:
    """What the probe of a usable video found.

    Attributes:
        video: The file's own frame rate, frame count and size.
        frames: Frames available at the target rate (>= the clip length).
    """

    video: VideoInfo
    frames: int


class VideoFolder(MediaFolder):
    """Video files under a folder (recursively), as clips of ``frames`` frames at the training size.

    Items are dicts: ``frames`` ``[F, H, W, C]`` uint8, ``index``, ``path`` (relative), ``start`` (first
    clip frame, at the target rate), ``label`` (int, when labelled) and ``caption`` (str, when the
    metadata has captions). With an ``adapter`` and ``cache_dir``, items also carry ``latents``
    ``[C', F, h, w]`` normalised by the adapter's current statistics: the raw per-frame latents of the
    whole file (at the target rate, centre-cropped) are cached once per file as safetensors under
    ``cache_dir / adapter.fingerprint()``, and a clip is a slice of them (each frame is encoded on its
    own, so the slice equals the clip's encoding).

    Args:
        root: The folder. Labels come from ``root/metadata.csv`` (columns ``path`` and ``label`` and/or
            ``caption``) or from the first subfolder below ``root``.
        config: Clip settings; keyword arguments build one if omitted.
        adapter: An :class:`ImageAdapter` or :class:`~multidiff.modalities.video.VideoAdapter` for the
            latent cache.
        cache_dir: Folder of the latent cache (needs ``adapter`` and ``crop="center"``).
        max_warnings: Per-file warnings shown before only the summary remains.
        **kwargs: Fields of :class:`VideoFolderConfig` when ``config`` is None.

    Raises:
        ValueError: If no usable file remains (the folder is named), on bad settings or bad metadata.
    """

    kind = "video"

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: VideoFolderConfig | None = None,
        *,
        adapter: nn.Module | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_warnings: int = 20,
        frame_cache_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if config is None:
            config = VideoFolderConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either config or keyword settings, not both (got {sorted(kwargs)})")
        self.config = config
        self.adapter = checked_cache_adapter(adapter, cache_dir, config.crop, config.size)
        if not config.return_frames and cache_dir is None:
            raise ValueError("return_frames=False only makes sense with a latent cache (cache_dir=...)")
        self.cache_dir = (
            None if cache_dir is None else Path(cache_dir) / self.adapter.fingerprint()  # type: ignore[union-attr]
        )
        self.frame_cache_dir = None if frame_cache_dir is None else Path(frame_cache_dir)
        self._scan(root, config.labels, config.extensions, max_warnings)

    # ----------------------------------------------------------------------------------- scanning
    def _probe(self, path: Path) -> VideoEntryInfo:
        cfg = self.config
        info = probe_video(path)
        announced = info.announced_frames
        if announced is not None and info.frames < _TRUNCATED_SHARE * announced - 1:
            raise VideoFileError(
                path, f"truncated: {info.frames} frames decode of the {announced} its container announces"
            )
        available = num_resampled_frames(info.frames, info.fps, fps=cfg.fps, stride=cfg.stride)
        if available < cfg.frames:
            rate = (
                f"{cfg.fps:g} fps"
                if cfg.fps
                else (f"stride {cfg.stride}" if cfg.stride else f"{info.fps:g} fps")
            )
            raise VideoFileError(
                path,
                f"too short: {available} frames at {rate} ({info.frames} in the file), need frames={cfg.frames}",
            )
        return VideoEntryInfo(info, available)

    # ----------------------------------------------------------------------------------- clips
    def clip_start(self, index: int, epoch: int) -> int:
        """First frame (at the target rate) of the clip of item ``index`` in ``epoch``."""
        entry = self._check_index(index)
        n, f = entry.info.frames, self.config.frames
        if not self.config.random_clip or n == f:
            return 0
        return int(self._rng(self.config.seed, epoch, index, 0).integers(0, n - f + 1))

    def crop_offsets(self, index: int, epoch: int) -> tuple[int, int]:
        """Top-left corner of the crop of item ``index`` in ``epoch``, in the resized frame."""
        entry = self._check_index(index)
        v = entry.info.video
        rh, rw = resized_size(v.height, v.width, self.config.size)
        if self.config.crop == "center":
            return crop_offsets(rh, rw, self.config.size, None)
        return crop_offsets(rh, rw, self.config.size, self._rng(self.config.seed, epoch, index, 1))

    def _read(self, entry: Any, start: int, count: int | None) -> torch.Tensor:
        cfg = self.config
        frames, _ = read_video(entry.path, fps=cfg.fps, stride=cfg.stride, start=start, max_frames=count)
        return frames  # (F, H, W, C)

    def get(self, index: int, epoch: int = 0) -> dict[str, Any]:
        """Item ``index`` with the clip and crop of ``epoch`` (deterministic)."""
        entry = self._check_index(index)
        cfg = self.config
        start = self.clip_start(index, epoch)
        item = self._base_item(index)
        item["start"] = start
        if cfg.return_frames:
            if self.frame_cache_dir is not None:
                frames = self.cached_frames(index)[start : start + cfg.frames]  # (n, H', W', C) resized
            else:
                frames = self._read(entry, start, cfg.frames)  # (n, H, W, C)
            if frames.shape[0] < cfg.frames:  # the file changed since it was probed
                raise VideoFileError(
                    entry.path, f"only {frames.shape[0]} of the {cfg.frames} frames from {start} decode now"
                )
            item["frames"] = resize_and_crop(frames, cfg.size, self.crop_offsets(index, epoch))
        if self.cache_dir is not None:
            raw = self.raw_latents(index)[:, start : start + cfg.frames]  # (C', F, h, w)
            item["latents"] = self.adapter.normalise(raw[None])[0]  # type: ignore[union-attr]
        return item

    # ----------------------------------------------------------------------------------- frame cache
    def cached_frames(self, index: int) -> torch.Tensor:
        """Every frame of file ``index`` at the target rate, resized to cover the training size (not yet
        cropped), uint8 ``[N, H', W', C]``: decoded once into ``frame_cache_dir`` (safetensors, written
        atomically; keyed by the file's path, size, mtime and the decoding settings) and read back from
        there, so training never waits on a video decoder."""
        if self.frame_cache_dir is None:
            raise ValueError("this VideoFolder has no frame_cache_dir")
        entry = self._check_index(index)
        cfg = self.config
        key = file_key(entry.path, entry.rel, cfg.fps, cfg.stride, cfg.size, "frames")
        v = entry.info.video
        size = resized_size(v.height, v.width, cfg.size)

        def build() -> torch.Tensor:
            frames = self._read(entry, 0, entry.info.frames)  # (N, H, W, C)
            return resize_frames(frames, size)  # (N, H', W', C): resized, not cropped

        return load_or_build(
            self.frame_cache_dir / f"{key}.safetensors", build, {"path": entry.rel}, key="frames"
        )

    def build_frame_cache(self, workers: int = 4, progress: bool = True) -> None:
        """Decode every file not in the frame cache yet (threads; a progress bar on a terminal)."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max(1, workers)) as pool:
            done = pool.map(self.cached_frames, range(len(self)))
            for _ in tqdm(done, total=len(self), desc="frame cache", unit="file", disable=not progress):
                pass

    # ----------------------------------------------------------------------------------- latent cache
    def cache_path(self, index: int) -> Path:
        """Where the raw latents of file ``index`` are cached."""
        if self.cache_dir is None:
            raise ValueError("this VideoFolder has no cache_dir")
        entry = self._check_index(index)
        cfg = self.config
        key = file_key(entry.path, entry.rel, cfg.fps, cfg.stride, cfg.size, cfg.crop)
        return self.cache_dir / f"{key}.safetensors"

    def raw_latents(self, index: int) -> torch.Tensor:
        """Raw (un-normalised) latents ``[C', N, h, w]`` of every frame of file ``index`` at the target rate.

        Read from the cache, or encoded (with the adapter, on its device) and cached.
        """
        return super().raw_latents(index)

    def _cache_pixels(self, index: int) -> torch.Tensor:
        """Every frame of file ``index`` at the target rate and size, as the adapter takes them:
        ``(N, C, H, W)`` in [-1, 1]."""
        entry = self.entries[index]
        return to_pixels(resize_and_crop(self._read(entry, 0, entry.info.frames), self.config.size))

    def _cached_form(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.transpose(0, 1)  # (N, C', h, w) -> (C', N, h, w)
