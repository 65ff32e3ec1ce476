"""Waveforms through a waveform autoencoder: :class:`OobleckAdapter` (Stable Audio's ``AutoencoderOobleck``).

The autoencoder maps a waveform ``[B, C, N]`` to latents ``[B, D, T]`` with ``T = N / hop`` (its declared
downsampling ratio, the codec contract of stable-audio-tools) and back. Latents are the autoencoder's
own (Stable Audio uses them unscaled, ``scale = 1``); diffusers is imported when a folder is loaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from multidiff.modalities.base import Adapter, Extent

__all__ = ["OobleckAdapter"]

VAE_FOLDER = "vae"


class OobleckAdapter(Adapter):
    """Media <-> latents through a diffusers ``AutoencoderOobleck`` (Evans et al. 2024, Stable Audio Open).

    Args:
        vae: The autoencoder (put in eval mode, frozen).
        scale: Latents are ``scale · z``; 1 for Stable Audio.
        latent_length: Latent frames the model always generates (Stable Audio's DiT ``sample_size``): the
            decoded waveform is then cut to the requested seconds. None: ``ceil(seconds · rate / hop)``.
    """

    modality: ClassVar[str] = "audio"

    def __init__(self, vae: nn.Module, *, scale: float = 1.0, latent_length: int | None = None) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"OobleckAdapter.scale must be positive, got {scale}")
        if latent_length is not None and latent_length < 1:
            raise ValueError(f"OobleckAdapter.latent_length must be >= 1, got {latent_length}")
        self.vae = vae.eval().requires_grad_(False)
        self.scale = float(scale)
        self.latent_length = latent_length
        self.sample_rate = int(vae.config.sampling_rate)
        self.hop = int(math.prod(vae.config.downsampling_ratios))
        self.channels = int(vae.config.audio_channels)
        self.latent_channels = int(vae.config.decoder_input_channels)

    def num_samples_of(self, extent: Extent) -> int:
        """Waveform length N of the extent's seconds."""
        (seconds,) = extent.need(type(self).__name__, "seconds")
        return int(seconds * self.sample_rate)

    def latent_shape(self, extent: Extent) -> tuple[int, ...]:
        if self.latent_length is not None:
            return (self.latent_channels, self.latent_length)
        return (self.latent_channels, max(1, math.ceil(self.num_samples_of(extent) / self.hop)))

    @torch.no_grad()
    def encode(self, media: torch.Tensor) -> torch.Tensor:
        """Waveforms ``[B, C, N]`` -> latents ``[B, D, ceil(N / hop)]`` (the posterior mean, padded with zeros
        to whole frames)."""
        w = torch.as_tensor(media, dtype=torch.float32, device=self._device())
        if w.ndim != 3 or w.shape[1] != self.channels:
            raise ValueError(f"OobleckAdapter.encode needs [B, {self.channels}, N], got {tuple(w.shape)}")
        w = F.pad(w, (0, (-w.shape[-1]) % self.hop))  # (B, C, hop·T)
        return self.normalise(self.vae.encode(w).latent_dist.mean)  # (B, D, T)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, extent: Extent | None = None) -> torch.Tensor:
        """Latents ``[B, D, T]`` -> waveforms ``[B, C, N]``, cut to the extent's seconds when given."""
        wave = self.vae.decode(self.denormalise(latents.to(self._device()))).sample  # (B, C, hop·T)
        if extent is not None and extent.seconds is not None:
            wave = wave[..., : self.num_samples_of(extent)]
        return wave.float()

    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A waveform ``[N']``, ``[C, N']`` or ``[B, C, N']`` (zero-padded or cut to the latent length) -> latents."""
        w = torch.as_tensor(media, dtype=torch.float32)
        w = w[None] if w.ndim == 1 else w
        w = w[None] if w.ndim == 2 else w
        n = self.latent_shape(extent)[-1] * self.hop
        w = F.pad(w, (0, max(0, n - w.shape[-1])))[..., :n]  # (B, C, N)
        return self.encode(w)

    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A waveform mask ``[N']`` or ``[B, N']`` -> ``[B or 1, 1, T]``; a frame is known only where all of its
        ``hop`` samples are (samples past the mask count as unknown)."""
        m = torch.as_tensor(mask, dtype=torch.float32, device=self._device())
        m = m[None] if m.ndim == 1 else m  # (B, N')
        t = self.latent_shape(extent)[-1]
        m = F.pad(m, (0, max(0, t * self.hop - m.shape[-1])))[:, : t * self.hop]  # (B, hop·T)
        return (m.reshape(m.shape[0], 1, t, self.hop).amin(-1) > 0.5).float()  # (B, 1, T)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.scale

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.scale

    def _device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def to_dict(self) -> dict[str, Any]:
        return {"type": "oobleck", "scale": self.scale, "latent_length": self.latent_length}

    def save(self, folder: Path) -> None:
        """Write the autoencoder into ``folder/vae`` (diffusers format), so the pipeline folder stands alone."""
        self.vae.save_pretrained(str(Path(folder) / VAE_FOLDER), safe_serialization=True)

    @classmethod
    def load(cls, config: dict[str, Any], folder: Path) -> OobleckAdapter:
        """Rebuild from ``config`` and ``folder/vae`` (an ``AutoencoderOobleck`` folder)."""
        from diffusers import AutoencoderOobleck

        sub = Path(folder) / VAE_FOLDER
        if not (sub / "config.json").is_file():
            raise ValueError(f"{sub}: no AutoencoderOobleck folder (config.json missing)")
        vae = AutoencoderOobleck.from_pretrained(str(sub), local_files_only=True)
        return cls(vae, scale=float(config.get("scale", 1.0)), latent_length=config.get("latent_length"))
