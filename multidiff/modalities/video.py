"""Videos as stacks of per-frame image latents.

A video ``[B, F, H, W, C]`` (uint8, or float in [-1, 1]) becomes latents ``[B, C', F, h, w]``: every
frame goes through the :class:`~multidiff.modalities.image.ImageAdapter` on its own (pixels, or a 2-D
image VAE as in Blattmann et al. 2023, "Align your Latents", and Latte, Ma et al. 2024), so the latent
frame count equals the pixel frame count and any contiguous slice of frames encodes to the same slice
of latents. Frames are encoded and decoded ``chunk_frames`` at a time, whatever the batch and clip
length, so decoding a long video needs the memory of one chunk, not of the whole video.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from multidiff.modalities.base import Adapter, Extent
from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig, to_pixels

__all__ = ["VideoAdapter", "padded_frame_mask"]


def padded_frame_mask(
    mask: torch.Tensor, frames: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """A per-frame mask ``[F']`` or ``[B, F']`` (1 = known) -> float ``[B or 1, F]``, zero after F' <= F."""
    m = torch.as_tensor(mask, device=device).float()
    if m.ndim == 1:
        m = m[None]
    if m.ndim != 2 or m.shape[1] > frames:
        raise ValueError(f"a video mask must be [F'] or [B, F'] with F' <= {frames}, got {tuple(m.shape)}")
    return F.pad(m, (0, frames - m.shape[1]))  # (B, F)


class VideoAdapter(Adapter):
    """Videos <-> latents ``[B, C', F, h, w]`` through an image adapter applied frame by frame.

    Args:
        image: The per-frame adapter (pixel space for small videos, or a VAE).
        chunk_frames: Frames per VAE call (default: the image adapter's ``chunk_size``).
    """

    modality = "video"

    def __init__(self, image: ImageAdapter, chunk_frames: int | None = None) -> None:
        super().__init__()
        if chunk_frames is not None and (isinstance(chunk_frames, bool) or chunk_frames < 1):
            raise ValueError(f"chunk_frames must be a positive int or None, got {chunk_frames!r}")
        self.image = image
        self.chunk_frames = chunk_frames or image.config.chunk_size

    @classmethod
    def from_config(
        cls, config: ImageAdapterConfig, vae: nn.Module | None = None, chunk_frames: int | None = None
    ) -> VideoAdapter:
        """A video adapter over a new :class:`ImageAdapter` built from ``config``."""
        return cls(ImageAdapter(config, vae), chunk_frames)

    @property
    def config(self) -> ImageAdapterConfig:
        """The per-frame adapter's config."""
        return self.image.config

    @property
    def latent_channels(self) -> int:
        """Channels C' of the latents."""
        return self.image.latent_channels

    def latent_shape(
        self, frames: int | Extent, height: int | None = None, width: int | None = None
    ) -> tuple[int, int, int, int]:
        """Latent shape ``(C', F, h, w)`` of a clip of ``frames`` frames of ``height x width`` (or
        ``Extent(frames=..., size=...)``)."""
        if isinstance(frames, Extent):
            frames, (height, width) = frames.need("a video adapter", "frames", "size")
        if height is None or width is None:
            raise ValueError("latent_shape needs (frames, height, width) or an Extent with frames and size")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        c, h, w = self.image.latent_shape(height, width)
        return (c, frames, h, w)

    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        """Frames ``[F', H, W, C]`` or ``[B, F', H, W, C]`` (F' <= F, uint8 or [-1, 1] float) -> latents
        ``[B, C', F, h, w]``, zero on the frames after F'."""
        frames, (h, w) = extent.need("a video adapter", "frames", "size")
        v = torch.as_tensor(media)
        v = v[None] if v.ndim == 4 else v
        if v.ndim != 5 or tuple(v.shape[2:4]) != (h, w):
            raise ValueError(
                f"known frames must be [F', {h}, {w}, C] or [B, F', {h}, {w}, C], got {tuple(v.shape)}"
            )
        if v.shape[1] > frames:
            raise ValueError(f"{v.shape[1]} known frames for a video of {frames} frames")
        z = self.encode(v.to(self.image.device))  # (B, C', F', h, w)
        return F.pad(z, (0, 0, 0, 0, 0, frames - z.shape[2]))  # (B, C', F, h, w)

    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A per-frame mask ``[F']`` or ``[B, F']`` (1 = known) -> ``[B or 1, 1, F, 1, 1]``, zero-padded to the
        extent's F frames (frames are encoded one by one, so a known frame gives known latents)."""
        (frames,) = extent.need("a video mask", "frames")
        m = padded_frame_mask(mask, frames, self.image.device)  # (B, F)
        return m[:, None, :, None, None]  # (B, 1, F, 1, 1)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw per-frame latents ``[B, C', F, h, w]`` -> normalised (the image adapter's statistics)."""
        return self.image.normalise(raw)

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise`."""
        return self.image.denormalise(latents)

    def _check_frames(self, frames: torch.Tensor) -> None:
        if frames.ndim != 5 or frames.shape[-1] != self.config.channels:
            raise ValueError(
                f"expected frames [B, F, H, W, {self.config.channels}], got shape {tuple(frames.shape)}"
            )

    def _check_latents(self, latents: torch.Tensor) -> None:
        c = self.latent_channels
        if latents.ndim != 5 or latents.shape[1] != c:
            raise ValueError(f"expected latents [B, {c}, F, h, w], got shape {tuple(latents.shape)}")

    # ------------------------------------------------------------------------------- encode
    def encode_raw(self, frames: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frames ``[B, F, H, W, C]`` -> raw (un-normalised) latents ``[B, C', F, h, w]``."""
        self._check_frames(frames)
        b, f = frames.shape[:2]
        flat = rearrange(frames, "B F H W C -> (B F) H W C")
        raw = torch.cat(
            [
                self.image.encode_raw(
                    to_pixels(flat[i : i + self.chunk_frames]),
                    chunk_size=self.chunk_frames,
                    generator=generator,
                )
                for i in range(0, b * f, self.chunk_frames)
            ]
        )  # (B*F, C', h, w)
        return rearrange(raw, "(B F) C H W -> B C F H W", B=b, F=f)

    def encode(self, frames: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frames ``[B, F, H, W, C]`` (uint8, or float in [-1, 1]) -> normalised latents ``[B, C', F, h, w]``."""
        return self.image.normalise(self.encode_raw(frames, generator=generator))

    def encode_pixels(
        self, pixels: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Channels-first pixels ``[B, C, F, H, W]`` in [-1, 1] -> normalised latents ``[B, C', F, h, w]``."""
        if pixels.ndim != 5:
            raise ValueError(f"expected pixels [B, C, F, H, W], got shape {tuple(pixels.shape)}")
        return self.encode(rearrange(pixels, "B C F H W -> B F H W C"), generator=generator)

    # ------------------------------------------------------------------------------- decode
    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        extent: Extent | None = None,
        *,
        chunk_frames: int | None = None,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Normalised latents ``[B, C', F, h, w]`` -> uint8 frames ``[B, F, H, W, C]``.

        Args:
            latents: The latents.
            chunk_frames: Frames per VAE call (default: :attr:`chunk_frames`); lower it if decoding runs
                out of memory.
            out_device: Where the frames go, chunk by chunk (e.g. ``"cpu"`` to keep accelerator memory
                bounded by one chunk; default: the latents' device).
        """
        self._check_latents(latents)
        b, _, f, h, w = latents.shape
        size = chunk_frames or self.chunk_frames
        out_device = latents.device if out_device is None else torch.device(out_device)
        flat = rearrange(latents, "B C F h w -> (B F) C h w")
        frames = torch.cat(
            [
                self.image.decode(flat[i : i + size], chunk_size=size, out_device=out_device)
                for i in range(0, b * f, size)
            ]
        )  # (B*F, H, W, C)
        return rearrange(frames, "(B F) H W C -> B F H W C", B=b, F=f)

    @torch.no_grad()
    def decode_pixels(self, latents: torch.Tensor, *, chunk_frames: int | None = None) -> torch.Tensor:
        """Normalised latents ``[B, C', F, h, w]`` -> float pixels ``[B, C, F, H, W]`` (not clamped)."""
        self._check_latents(latents)
        b, _, f = latents.shape[:3]
        size = chunk_frames or self.chunk_frames
        flat = rearrange(latents, "B C F h w -> (B F) C h w")
        pixels = torch.cat(
            [self.image.decode_pixels(flat[i : i + size], chunk_size=size) for i in range(0, b * f, size)]
        )
        return rearrange(pixels, "(B F) C H W -> B C F H W", B=b, F=f)

    # ------------------------------------------------------------------------------- statistics
    def fit_stats(self, videos: Iterable[torch.Tensor], min_std: float = 1e-4) -> VideoAdapter:
        """Measure the per-channel latent statistics on batches of frames ``[B, F, H, W, C]``.

        A no-op in pixel space (see :meth:`ImageAdapter.fit_stats`).
        """
        if self.image.vae is None:
            return self
        self.image.fit_stats_latents((self.encode_raw(v) for v in videos), min_std=min_std)
        return self

    def fit_stats_latents(self, raw_latents: Iterable[torch.Tensor], min_std: float = 1e-4) -> VideoAdapter:
        """Measure the statistics on raw latents ``[B, C', F, h, w]`` (e.g. read from a latent cache)."""
        self.image.fit_stats_latents(raw_latents, min_std=min_std)
        return self

    # ------------------------------------------------------------------------------- serialisation
    def fingerprint(self) -> str:
        """Hash of what raw latents depend on (that of the image adapter: frames are encoded one by one)."""
        return self.image.fingerprint()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable config: the image adapter's, and the chunk size."""
        return {"type": "video", "image": self.image.to_dict(), "chunk_frames": self.chunk_frames}

    def save(self, folder: Path) -> None:
        """The per-frame VAE (if any) into ``folder/vae/``."""
        self.image.save(folder)

    @classmethod
    def load(cls, config: dict[str, Any], folder: Path) -> VideoAdapter:
        """Rebuild from :meth:`to_config`, with the VAE :meth:`save` wrote (or the one it names)."""
        from multidiff.serialize import vae_path

        return cls.from_dict(config, vae_path=vae_path(config["image"], folder))

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        vae: nn.Module | None = None,
        *,
        vae_path: str | os.PathLike[str] | None = None,
    ) -> VideoAdapter:
        """Rebuild from :meth:`to_dict` output (see :meth:`ImageAdapter.from_dict` for the VAE arguments)."""
        if "type" in d and d["type"] != "video":
            raise ValueError(f"not a video adapter config: type={d['type']!r}")
        image = ImageAdapter.from_dict(d["image"], vae, vae_path=vae_path)
        return cls(image, int(d["chunk_frames"]))
