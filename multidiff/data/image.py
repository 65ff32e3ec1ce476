"""A dataset over a folder of images (png, jpg, bmp, webp), resized and cropped to the training size.

Every file is checked once at construction (decoded in full with ``scan_content``, else its header is
read). Empty, truncated and non-image files are skipped with a
:class:`~multidiff.data.common.SkippedFileWarning` naming the file and the reason, counted in
``dataset.skipped``; images of any size are resized to cover the training size and cropped. Images can
be served as one-frame clips (``as_video=True``: ``frames`` ``[1, H, W, C]``), so that images and videos
train the same weights of a video model.
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
    resize_and_crop,
    resized_size,
)
from multidiff.data.video import checked_cache_adapter, parse_size
from multidiff.io import IMAGE_EXTENSIONS, ImageInfo, probe_image, read_image
from multidiff.modalities.image import to_pixels

__all__ = ["ImageFolder", "ImageFolderConfig", "SkippedFileWarning"]

_CROPS = ("center", "random")


@dataclass(frozen=True)
class ImageFolderConfig:
    """How an :class:`ImageFolder` selects, decodes and crops its images.

    Attributes:
        size: Training size, ``(height, width)`` or one int for a square.
        crop: ``"center"`` or ``"random"`` (after resizing to cover ``size``).
        labels: ``"auto"`` (metadata.csv if present, else subfolder names if every file is in one, else
            none), ``"folders"``, ``"metadata"`` or ``"none"``.
        extensions: File suffixes to consider (lower case).
        scan_content: Decode every image once at construction to find truncated data; False only reads
            headers.
        as_video: Serve one-frame clips: ``frames`` ``[1, H, W, C]`` and ``latents`` ``[C', 1, h, w]``.
        seed: Base seed of the random crops.
        return_images: Include the pixels in items (may be False when a latent cache is used).
    """

    size: int | tuple[int, int] = 64
    crop: str = "center"
    labels: str = "auto"
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    scan_content: bool = True
    as_video: bool = False
    seed: int = 0
    return_images: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", parse_size(self.size, "ImageFolderConfig"))
        if self.crop not in _CROPS:
            raise ValueError(f"ImageFolderConfig.crop must be one of {_CROPS}, got {self.crop!r}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"ImageFolderConfig.labels must be one of {LABEL_MODES}, got {self.labels!r}")
        object.__setattr__(self, "extensions", tuple(e.lower() for e in self.extensions))
        if not self.extensions or not all(e.startswith(".") for e in self.extensions):
            raise ValueError(
                f"ImageFolderConfig.extensions must be suffixes like '.png', got {self.extensions!r}"
            )


class ImageFolder(MediaFolder):
    """Image files under a folder (recursively), at the training size.

    Items are dicts: ``image`` ``[H, W, C]`` uint8 (or ``frames`` ``[1, H, W, C]`` with ``as_video``),
    ``index``, ``path`` (relative), ``label`` (int, when labelled) and ``caption`` (when the metadata has
    captions). With an ``adapter`` and ``cache_dir``, items also carry ``latents`` ``[C', h, w]`` (or
    ``[C', 1, h, w]``), normalised by the adapter's current statistics; the raw latents of each
    centre-cropped image are cached as safetensors under ``cache_dir / adapter.fingerprint()``.

    Args:
        root: The folder (labels from ``metadata.csv`` or subfolders, as for videos).
        config: Settings; keyword arguments build one if omitted.
        adapter: An ImageAdapter or VideoAdapter for the latent cache.
        cache_dir: Folder of the latent cache (needs ``adapter`` and ``crop="center"``).
        max_warnings: Per-file warnings shown before only the summary remains.
        **kwargs: Fields of :class:`ImageFolderConfig` when ``config`` is None.

    Raises:
        ValueError: If no usable file remains (the folder is named), on bad settings or bad metadata.
    """

    kind = "image"

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: ImageFolderConfig | None = None,
        *,
        adapter: nn.Module | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_warnings: int = 20,
        **kwargs: Any,
    ) -> None:
        if config is None:
            config = ImageFolderConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either config or keyword settings, not both (got {sorted(kwargs)})")
        self.config = config
        self.adapter = checked_cache_adapter(adapter, cache_dir, config.crop, config.size)
        if not config.return_images and cache_dir is None:
            raise ValueError("return_images=False only makes sense with a latent cache (cache_dir=...)")
        self.cache_dir = (
            None if cache_dir is None else Path(cache_dir) / self.adapter.fingerprint()  # type: ignore[union-attr]
        )
        self._scan(root, config.labels, config.extensions, max_warnings)

    def _probe(self, path: Path) -> ImageInfo:
        info = probe_image(path)
        if self.config.scan_content:
            read_image(path)  # raises ImageFileError on truncated or corrupt data
        return info

    def crop_offsets(self, index: int, epoch: int) -> tuple[int, int]:
        """Top-left corner of the crop of item ``index`` in ``epoch``, in the resized image."""
        info = self._check_index(index).info
        rh, rw = resized_size(info.height, info.width, self.config.size)
        if self.config.crop == "center":
            return crop_offsets(rh, rw, self.config.size, None)
        return crop_offsets(rh, rw, self.config.size, self._rng(self.config.seed, epoch, index, 1))

    def _pixels(self, index: int, offsets: tuple[int, int] | None) -> torch.Tensor:
        image = read_image(self.entries[index].path)  # (H, W, C)
        return resize_and_crop(image[None], self.config.size, offsets)  # (1, H, W, C)

    def get(self, index: int, epoch: int = 0) -> dict[str, Any]:
        """Item ``index`` with the crop of ``epoch`` (deterministic)."""
        self._check_index(index)
        cfg = self.config
        item = self._base_item(index)
        if cfg.return_images:
            frames = self._pixels(index, self.crop_offsets(index, epoch))  # (1, H, W, C)
            if cfg.as_video:
                item["frames"] = frames
            else:
                item["image"] = frames[0]
        if self.cache_dir is not None:
            z = self.adapter.normalise(self.raw_latents(index)[None])[0]  # type: ignore[union-attr]  # (C', h, w)
            item["latents"] = z[:, None] if cfg.as_video else z
        return item

    # ----------------------------------------------------------------------------------- latent cache
    def cache_path(self, index: int) -> Path:
        """Where the raw latents of image ``index`` are cached."""
        if self.cache_dir is None:
            raise ValueError("this ImageFolder has no cache_dir")
        entry = self._check_index(index)
        return (
            self.cache_dir
            / f"{file_key(entry.path, entry.rel, self.config.size, self.config.crop)}.safetensors"
        )

    unit = "image"

    def raw_latents(self, index: int) -> torch.Tensor:
        """Raw (un-normalised) latents ``[C', h, w]`` of the centre crop of image ``index`` (cached)."""
        return super().raw_latents(index)

    def _cache_pixels(self, index: int) -> torch.Tensor:
        return to_pixels(self._pixels(index, None))  # (1, C, H, W) in [-1, 1]

    def _cached_form(self, raw: torch.Tensor) -> torch.Tensor:
        return raw[0]  # (1, C', h, w) -> (C', h, w)
