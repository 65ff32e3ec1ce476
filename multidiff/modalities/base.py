"""The adapter interface every modality implements: media <-> latents of standard deviation ``sigma_data``.

An adapter is what a modality adds to the denoising core (DESIGN.md, "Adapter"): it turns media into the
latent tensors a backbone sees and back, says which latent shape a request for media of some extent
needs, and which latents are known when part of the media is given (inpainting, continuation,
image-to-video). A new modality is one new adapter file.

The extent of media is an :class:`Extent`: ``seconds`` for audio, ``size`` for images, ``frames`` and
``size`` for video; each adapter reads the fields its modality has and refuses a request that lacks them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Adapter", "Extent", "load_adapter"]


@dataclass(frozen=True)
class Extent:
    """How much media: ``seconds`` (audio), ``frames`` (video), ``size`` as ``(height, width)`` in pixels
    (images and video frames; one int means a square).

    Raises:
        ValueError: For a non-positive value.
    """

    seconds: float | None = None
    frames: int | None = None
    size: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"Extent.seconds must be positive, got {self.seconds!r}")
        if self.frames is not None and (
            isinstance(self.frames, bool) or int(self.frames) != self.frames or self.frames < 1
        ):
            raise ValueError(f"Extent.frames must be a positive int, got {self.frames!r}")
        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"Extent.size must be a positive int or (height, width), got {self.size!r}")
            object.__setattr__(self, "size", size)

    def need(self, owner: str, *fields: str) -> tuple[Any, ...]:
        """The values of ``fields``; ValueError naming ``owner`` and the field when one is missing."""
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{owner} needs {', '.join(missing)} in the extent, got {self}")
        return tuple(getattr(self, f) for f in fields)


class Adapter(nn.Module, abc.ABC):
    """Media <-> normalised latents for one modality.

    Implementations: :class:`~multidiff.modalities.audio.MelAdapter` (waveforms, log-mel latents
    ``[B, C, M, T]``, a vocoder to decode), :class:`~multidiff.modalities.image.ImageAdapter` (images,
    pixels or VAE latents ``[B, C, h, w]``), :class:`~multidiff.modalities.video.VideoAdapter` (videos,
    per-frame latents ``[B, C, F, h, w]``). Latents are normalised once, here, to standard deviation
    ``sigma_data`` (Karras et al. 2022, Sec. 5), from statistics measured on the data.
    """

    #: ``"audio"``, ``"image"`` or ``"video"``.
    modality: ClassVar[str]

    @abc.abstractmethod
    def encode(self, media: torch.Tensor) -> torch.Tensor:
        """Media (a batch) -> normalised latents."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor, extent: Extent | None = None) -> torch.Tensor:
        """Normalised latents -> media (of ``extent`` where the latents alone do not fix it, e.g. audio
        samples)."""

    @abc.abstractmethod
    def latent_shape(self, extent: Extent) -> tuple[int, ...]:
        """The latent shape (no batch axis) of media of ``extent``."""

    @abc.abstractmethod
    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        """Known media (one item or a batch; shorter than the extent where time is involved) -> latents of
        the extent's shape, zero where no media was given."""

    @abc.abstractmethod
    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A mask over the media (1 = known) -> the mask over latents (1 = known), broadcastable to a batch
        of latents of ``extent``; a latent counts as known only where all the media it depends on is."""

    @abc.abstractmethod
    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw features (log-mel, VAE latents, pixels) -> latents of std ``sigma_data``."""

    @abc.abstractmethod
    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalise`."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings and statistics (weights of components are saved beside them)."""

    def to_config(self) -> dict[str, Any]:
        """What a pipeline folder's ``config.json`` stores of this adapter (:meth:`to_dict` by default)."""
        return self.to_dict()

    def save(self, folder: Path) -> None:
        """Write the files of components with weights (a vocoder, a VAE) into a pipeline folder (none by
        default)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, config: dict[str, Any], folder: Path) -> Adapter:
        """Rebuild the adapter that :meth:`to_config` and :meth:`save` wrote into ``folder``."""


def load_adapter(config: dict[str, Any] | None, folder: Path, modality: str) -> Adapter:
    """The adapter a pipeline folder's ``config.json`` describes (its ``type``), which must be of ``modality``.

    Raises:
        ValueError: For a missing or unknown adapter, or one of another modality (the folder is named).
    """
    from multidiff.modalities.audio import MelAdapter
    from multidiff.modalities.image import ImageAdapter
    from multidiff.modalities.temporal_vae import CausalVideoVAEAdapter, TemporalDecoderAdapter
    from multidiff.modalities.video import VideoAdapter
    from multidiff.modalities.waveform import OobleckAdapter

    table: dict[str, type[Adapter]] = {
        "mel": MelAdapter,
        "image": ImageAdapter,
        "video": VideoAdapter,
        "oobleck": OobleckAdapter,
        "temporal_decoder": TemporalDecoderAdapter,
        "causal_video_vae": CausalVideoVAEAdapter,
    }
    kind = None if config is None else config.get("type")
    cls = table.get(str(kind))
    if cls is None or cls.modality != modality:
        raise ValueError(
            f"{folder / 'config.json'}: a {modality} pipeline needs a {modality} adapter, got {kind!r} "
            f"(known adapters: {sorted(table)})"
        )
    return cls.load(dict(config), folder)  # type: ignore[arg-type]
