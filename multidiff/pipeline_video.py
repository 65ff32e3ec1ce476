"""Videos and images from latent diffusion models: :class:`VideoPipeline` (image-to-video, continuation,
interpolation through known frames) and :class:`ImagePipeline`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.modalities.base import Extent
from multidiff.pipeline import Pipeline
from multidiff.serialize import CONFIG_NAME, save_vae, vae_path

__all__ = ["VideoPipeline", "ImagePipeline", "frame_cond_channels"]


def _parse_size(size: int | Sequence[int] | None, default: tuple[int, int] | None = None) -> tuple[int, int]:
    if size is None:
        if default is None:
            raise ValueError("pass size= (this pipeline records no training size)")
        return default
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


class VideoPipeline(Pipeline):
    """Videos from a spatio-temporal latent diffusion model (a :class:`~multidiff.modalities.video.VideoAdapter`).

    Latents are ``[B, C, F, h, w]``; frames are axis 2. A backbone with ``cond_channels = C + 1`` was trained
    with frame-mask conditioning (:mod:`multidiff.train.masks`): it receives ``[known · mask, mask]`` as
    extra channels (zeros for unconditional generation). Known frames are in addition pinned in x0 space by
    :func:`multidiff.core.guidance.inpaint` (``replace_known``), which makes them exact in any model,
    mask-trained or not.

    Args:
        denoiser: The denoiser over video latents.
        adapter: The :class:`VideoAdapter` (pixel space or a per-frame VAE with fitted statistics).
        **kwargs: As for :class:`Pipeline` (``window`` counts frames).
    """

    time_axis: ClassVar[int] = -3

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module,
        *,
        size: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        from multidiff.modalities.video import VideoAdapter

        if not isinstance(adapter, VideoAdapter):
            raise ValueError(f"VideoPipeline needs a VideoAdapter, got {type(adapter).__name__}")
        super().__init__(denoiser, adapter, **kwargs)
        self.size = None if size is None else _parse_size(size)
        extra = int(getattr(getattr(self.backbone, "config", None), "cond_channels", 0) or 0)
        if extra not in (0, adapter.latent_channels + 1):
            raise ValueError(
                f"the backbone takes {extra} cond_channels; a frame-mask model needs "
                f"{adapter.latent_channels + 1} (latents + mask) and an unconditional one 0"
            )
        self.frame_conditioned = extra > 0

    def latent_shape(self, frames: int, size: int | Sequence[int]) -> tuple[int, int, int, int]:
        """Latent shape ``(C, F, h, w)`` of ``frames`` frames of ``size`` (int or ``(H, W)``)."""
        return self.adapter.latent_shape(frames, *_parse_size(size, self.size))  # type: ignore[union-attr]

    def encode_known(self, known: Tensor, frames: int, size: int | Sequence[int]) -> Tensor:
        """Frames ``[F', H, W, C]`` or ``[B, F', H, W, C]`` (uint8 or [-1, 1] float) -> latents
        ``[B, C', F, h, w]``, zero frames appended up to ``frames`` (F' > F is refused)."""
        v = torch.as_tensor(known)
        if v.ndim == 4:
            v = v[None]
        h, w = _parse_size(size, self.size)
        if v.ndim != 5 or tuple(v.shape[2:4]) != (h, w):
            raise ValueError(
                f"known frames must be [F', {h}, {w}, C] or [B, F', {h}, {w}, C], got {tuple(v.shape)}"
            )
        if v.shape[1] > frames:
            raise ValueError(f"{v.shape[1]} known frames for a video of {frames} frames")
        z = self.adapter.encode(v.to(self.device))  # type: ignore[union-attr]  # (B, C', F', h, w)
        return F.pad(z, (0, 0, 0, 0, 0, frames - z.shape[2]))  # (B, C', F, h, w)

    def frame_mask(self, mask: Tensor, frames: int) -> Tensor:
        """A per-frame mask ``[F']`` or ``[B, F']`` (1 = known) -> ``[B or 1, 1, F, 1, 1]`` (zero-padded to F);
        the adapter's :meth:`~multidiff.modalities.video.VideoAdapter.latent_mask`."""
        return self.adapter.latent_mask(torch.as_tensor(mask, device=self.device), Extent(frames=frames))  # type: ignore[union-attr]

    def generate(  # type: ignore[override]
        self,
        num: int,
        frames: int | None = None,
        size: int | Sequence[int] | None = None,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        label: Any = None,
        seed: int | Sequence[int] | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        strength: float | None = None,
        replace_known: bool = True,
        decode_chunk: int | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> Tensor:
        """Generate ``num`` videos of ``frames`` frames.

        Args:
            num: Number of videos B.
            frames: Frames F (default: the training length); more than the training length is done with
                overlapping temporal windows.
            size: Frame size, int or ``(H, W)`` (default: the training size).
            steps: Sampler steps.
            sampler: Sampler name.
            guidance: CFG scale (with ``label``).
            label: Class label(s).
            seed: Base seed (video k uses ``seed + k``) or one per video.
            known: Frames ``[F', H, W, C]`` or ``[B, F', H, W, C]`` (F' <= F, uint8): kept where ``mask``
                is 1 (image-to-video, continuation, interpolation), or the input of SDEdit with ``strength``.
            mask: Per-frame ``[F']`` or ``[B, F']``, 1 where ``known`` is kept.
            strength: Video-to-video (SDEdit) strength in (0, 1].
            replace_known: Also pin the known frames in x0 space (:func:`~multidiff.core.guidance.inpaint`);
                they then come back exactly (up to the VAE). Needed for a model without frame-mask training.
            decode_chunk: Frames per VAE decode call (lower it if decoding runs out of memory).
            callback: Called after every sampler step.
            progress: Show a progress bar.
            **kwargs: Further :meth:`Pipeline.sample` keywords.

        Returns:
            uint8 frames ``[B, F, H, W, C]`` on the CPU.
        """
        if frames is None:
            if self.window is None:
                raise ValueError("pass frames= (this pipeline records no training length)")
            frames = self.window
        shape = self.latent_shape(frames, size)
        known_z = self.encode_known(known, frames, size) if known is not None else None
        mask_z = self.frame_mask(mask, frames) if mask is not None else None
        if mask_z is not None and known_z is None:
            raise ValueError("a mask needs known= frames")
        cond = dict(kwargs.pop("cond", None) or {})
        if self.frame_conditioned:
            if known_z is not None and mask_z is not None:
                cc = frame_cond_channels(known_z.expand(num, *shape), mask_z.expand(num, 1, frames, 1, 1))
            else:
                cc = torch.zeros((num, shape[0] + 1, *shape[1:]), device=self.device)
            cond["cond_channels"] = cc  # (B, C + 1, F, h, w)
        latents = self.sample(
            num,
            shape,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            label=label,
            seed=seed,
            known=known_z,
            mask=mask_z if replace_known else None,
            strength=strength,
            cond=cond,
            callback=callback,
            progress=progress,
            **kwargs,
        )
        return self.adapter.decode(latents, chunk_frames=decode_chunk, out_device="cpu")  # type: ignore[union-attr]

    def image_to_video(self, image: Tensor, frames: int, **kwargs: Any) -> Tensor:
        """Animate ``image`` (``[H, W, C]`` or ``[B, H, W, C]``) as the first of ``frames`` frames."""
        image = torch.as_tensor(image)
        clip = image[:, None] if image.ndim == 4 else image[None]  # (B, 1, H, W, C) or (1, H, W, C)
        num = kwargs.pop("num", image.shape[0] if image.ndim == 4 else 1)
        size = tuple(image.shape[-3:-1])
        return self.generate(num, frames, size, known=clip, mask=torch.ones(1), **kwargs)

    def continue_video(self, clip: Tensor, frames: int, **kwargs: Any) -> Tensor:
        """Continue ``clip`` (``[F', H, W, C]`` or ``[B, F', H, W, C]``) to ``frames`` frames in all."""
        clip = torch.as_tensor(clip)
        num = kwargs.pop("num", clip.shape[0] if clip.ndim == 5 else 1)
        size = tuple(clip.shape[-3:-1])
        return self.generate(num, frames, size, known=clip, mask=torch.ones(clip.shape[-4]), **kwargs)

    def interpolate(self, first: Tensor, last: Tensor, frames: int, **kwargs: Any) -> Tensor:
        """``frames`` frames from ``first`` to ``last`` (each ``[H, W, C]``), the inner ones generated."""
        first, last = torch.as_tensor(first), torch.as_tensor(last)
        if frames < 2:
            raise ValueError(f"interpolation needs frames >= 2, got {frames}")
        clip = torch.zeros((frames, *first.shape), dtype=first.dtype)
        clip[0], clip[-1] = first, last
        mask = torch.zeros(frames)
        mask[0] = mask[-1] = 1
        return self.generate(
            kwargs.pop("num", 1), frames, tuple(first.shape[:2]), known=clip, mask=mask, **kwargs
        )

    # ----------------------------------------------------------------------------------- saving
    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "size": None if self.size is None else list(self.size)}

    @classmethod
    def init_kwargs_from_config(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        return {"size": data.get("size")}

    def save_adapter_files(self, folder: Path) -> None:
        save_vae(self.adapter.image, folder)  # type: ignore[union-attr]

    @classmethod
    def adapter_from_dict(cls, d: Mapping[str, Any] | None, folder: Path) -> nn.Module:
        from multidiff.modalities.video import VideoAdapter

        if d is None or d.get("type") != "video":
            raise ValueError(
                f"{folder / CONFIG_NAME}: a VideoPipeline needs a video adapter, got "
                f"{None if d is None else d.get('type')!r}"
            )
        return VideoAdapter.from_dict(d, vae_path=vae_path(d["image"], folder))


def frame_cond_channels(known: Tensor, mask: Tensor) -> Tensor:
    """The ``C + 1`` channels of frame-mask conditioning, ``[known · mask, mask]`` (for ``cond_channels=``).

    Masked-frame conditioning (Voleti et al. 2022, "MCVD", Sec. 3) with the mask given explicitly; see
    :mod:`multidiff.train.masks` for the training curriculum.

    Args:
        known: Clean latents ``[B, C, F, H, W]`` (values on unknown frames are ignored).
        mask: ``[B, 1, F, 1, 1]`` (or broadcastable to ``[B, 1, F, H, W]``), 1 on known frames.

    Returns:
        ``[B, C + 1, F, H, W]``.
    """
    if known.ndim != 5:
        raise ValueError(f"known latents must be [B, C, F, H, W], got shape {tuple(known.shape)}")
    b, _, f, h, w = known.shape
    m = mask.to(device=known.device, dtype=known.dtype).expand(b, 1, f, h, w)  # (B, 1, F, H, W)
    return torch.cat([known * m, m], dim=1)  # (B, C + 1, F, H, W)


class ImagePipeline(Pipeline):
    """Images from an image latent diffusion model (an :class:`~multidiff.modalities.image.ImageAdapter`).

    Latents are ``[B, C, h, w]``; ``window`` (if set) counts latent columns, so wide images are made by
    overlapping windows along the width.

    Args:
        denoiser: The denoiser over image latents.
        adapter: The :class:`ImageAdapter` (pixels or a VAE with fitted statistics).
        **kwargs: As for :class:`Pipeline`.
    """

    time_axis: ClassVar[int] = -1

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module,
        *,
        size: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        from multidiff.modalities.image import ImageAdapter

        if not isinstance(adapter, ImageAdapter):
            raise ValueError(f"ImagePipeline needs an ImageAdapter, got {type(adapter).__name__}")
        super().__init__(denoiser, adapter, **kwargs)
        self.size = None if size is None else _parse_size(size)

    def latent_mask(self, mask: Tensor, size: tuple[int, int]) -> Tensor:
        """A pixel mask ``[H, W]`` or ``[B, H, W]`` (1 = known) -> ``[B or 1, 1, h, w]``; the adapter's
        :meth:`~multidiff.modalities.image.ImageAdapter.latent_mask`."""
        return self.adapter.latent_mask(torch.as_tensor(mask, device=self.device), Extent(size=size))  # type: ignore[union-attr]

    def generate(  # type: ignore[override]
        self,
        num: int,
        size: int | Sequence[int] | None = None,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        label: Any = None,
        seed: int | Sequence[int] | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        strength: float | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> Tensor:
        """Generate ``num`` images of ``size`` (int or ``(H, W)``).

        Args:
            known: Image ``[H, W, C]`` or ``[B, H, W, C]`` (uint8): kept where ``mask`` is 1 (inpainting), or
                the input of image-to-image with ``strength``.
            mask: Pixel mask ``[H, W]`` or ``[B, H, W]``, 1 where ``known`` is kept.
            Others: as for :meth:`VideoPipeline.generate`.

        Returns:
            uint8 images ``[B, H, W, C]`` on the CPU.
        """
        h, w = _parse_size(size, self.size)
        shape = self.adapter.latent_shape(h, w)  # type: ignore[union-attr]
        known_z = None
        if known is not None:
            img = torch.as_tensor(known)
            img = img[None] if img.ndim == 3 else img
            if img.ndim != 4 or tuple(img.shape[1:3]) != (h, w):
                raise ValueError(f"known must be [{h}, {w}, C] or [B, {h}, {w}, C], got {tuple(img.shape)}")
            known_z = self.adapter.encode(img.to(self.device))  # type: ignore[union-attr]
        mask_z = self.latent_mask(mask, (h, w)) if mask is not None else None
        latents = self.sample(
            num,
            shape,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            label=label,
            seed=seed,
            known=known_z,
            mask=mask_z,
            strength=strength,
            callback=callback,
            progress=progress,
            **kwargs,
        )
        return self.adapter.decode(latents, out_device="cpu")  # type: ignore[union-attr]

    # ----------------------------------------------------------------------------------- saving
    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "size": None if self.size is None else list(self.size)}

    @classmethod
    def init_kwargs_from_config(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        return {"size": data.get("size")}

    def save_adapter_files(self, folder: Path) -> None:
        save_vae(self.adapter, folder)  # type: ignore[arg-type]

    @classmethod
    def adapter_from_dict(cls, d: Mapping[str, Any] | None, folder: Path) -> nn.Module:
        from multidiff.modalities.image import ImageAdapter

        if d is None or d.get("type") != "image":
            raise ValueError(
                f"{folder / CONFIG_NAME}: an ImagePipeline needs an image adapter, got "
                f"{None if d is None else d.get('type')!r}"
            )
        return ImageAdapter.from_dict(d, vae_path=vae_path(d, folder))
