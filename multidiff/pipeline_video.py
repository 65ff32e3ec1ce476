"""Videos and images from latent diffusion models: :class:`VideoPipeline` (image-to-video, continuation,
interpolation through known frames) and :class:`ImagePipeline`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.core.guidance import mask_channels
from multidiff.modalities.base import Extent
from multidiff.pipeline import Pipeline

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


class _FramePipeline(Pipeline):
    """What the video and image pipelines share: a frame size recorded with the model, an adapter of one
    type whose per-frame VAE is saved into the pipeline folder (``vae/``)."""

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module,
        *,
        size: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if getattr(adapter, "modality", None) != self.modality:
            raise ValueError(
                f"{type(self).__name__} needs a {self.modality} adapter, got {type(adapter).__name__}"
            )
        super().__init__(denoiser, adapter, **kwargs)
        self.size = None if size is None else _parse_size(size)

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "size": None if self.size is None else list(self.size)}

    @classmethod
    def init_kwargs_from_config(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        return {"size": data.get("size")}


class VideoPipeline(_FramePipeline):
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

    modality: ClassVar[str | None] = "video"

    def __init__(self, denoiser: Denoiser, adapter: nn.Module, **kwargs: Any) -> None:
        super().__init__(denoiser, adapter, **kwargs)
        extra = int(getattr(getattr(self.backbone, "config", None), "cond_channels", 0) or 0)
        if extra not in (0, adapter.latent_channels + 1):  # type: ignore[operator]
            raise ValueError(
                f"the backbone takes {extra} cond_channels; a frame-mask model needs "
                f"{adapter.latent_channels + 1} (latents + mask) and an unconditional one 0"  # type: ignore[operator]
            )
        self.frame_conditioned = extra > 0

    def default_extent(self) -> Extent:
        """The training length and frame size, where recorded."""
        return Extent(frames=self.window or None, size=self.size)

    def generate(  # type: ignore[override]
        self,
        num: int,
        frames: int | Extent | None = None,
        size: int | Sequence[int] | None = None,
        *,
        decode_chunk: int | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Generate ``num`` videos of ``frames`` frames of ``size`` (int or ``(H, W)``; defaults: the training
        length and size): :meth:`Pipeline.generate` with ``Extent(frames=..., size=...)``.

        More frames than the training length are made with overlapping temporal windows. ``known`` is frames
        ``[F', H, W, C]`` or ``[B, F', H, W, C]`` (F' <= F, uint8), kept where ``mask`` (per frame, ``[F']`` or
        ``[B, F']``) is 1 (image-to-video, continuation, interpolation), or the input of SDEdit with
        ``strength``; ``replace_known=False`` leaves them to the frame-mask conditioning alone.
        ``decode_chunk``: frames per VAE decode call (lower it if decoding runs out of memory).

        Returns:
            uint8 frames ``[B, F, H, W, C]`` on the CPU.
        """
        if isinstance(frames, Extent):  # the interface's form: generate(num, Extent(frames=..., size=...))
            frames, size = frames.frames, frames.size
        if frames is None and not self.window:
            raise ValueError("pass frames= (this pipeline records no training length)")
        if size is None and self.size is None:
            raise ValueError("pass size= (this pipeline records no training size)")
        extent = Extent(frames=frames, size=None if size is None else _parse_size(size))
        decode = {"chunk_frames": decode_chunk, "out_device": "cpu", **dict(kwargs.pop("decode", None) or {})}
        return super().generate(num, extent, decode=decode, **kwargs)

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


#: The frame-mask conditioning channels ``[known · mask, mask]`` (:func:`multidiff.core.guidance.mask_channels`).
frame_cond_channels = mask_channels


class ImagePipeline(_FramePipeline):
    """Images from an image latent diffusion model (an :class:`~multidiff.modalities.image.ImageAdapter`).

    Latents are ``[B, C, h, w]``; ``window`` (if set) counts latent columns, so wide images are made by
    overlapping windows along the width.

    Args:
        denoiser: The denoiser over image latents.
        adapter: The :class:`ImageAdapter` (pixels or a VAE with fitted statistics).
        **kwargs: As for :class:`Pipeline`.
    """

    time_axis: ClassVar[int] = -1

    modality: ClassVar[str | None] = "image"

    def default_extent(self) -> Extent:
        """The training size, where recorded."""
        return Extent(size=self.size)

    def generate(self, num: int, size: int | Sequence[int] | Extent | None = None, **kwargs: Any) -> Tensor:  # type: ignore[override]
        """Generate ``num`` images of ``size`` (int or ``(H, W)``; default: the training size):
        :meth:`Pipeline.generate` with ``Extent(size=...)``. ``known`` is an image ``[H, W, C]`` or
        ``[B, H, W, C]`` (uint8) kept where ``mask`` (pixels ``[H, W]`` or ``[B, H, W]``) is 1 (inpainting), or
        the input of image-to-image with ``strength``.

        Returns:
            uint8 images ``[B, H, W, C]`` on the CPU.
        """
        if isinstance(size, Extent):
            size = size.size
        if size is None and self.size is None:
            raise ValueError("pass size= (this pipeline records no training size)")
        extent = Extent(size=None if size is None else _parse_size(size))
        decode = {"out_device": "cpu", **dict(kwargs.pop("decode", None) or {})}
        return super().generate(num, extent, decode=decode, **kwargs)
