"""Audio as log-mel spectrograms: the mel adapter (the mel definition and transform are in
:mod:`multidiff.modalities.mel`).

The audio modality turns a waveform ``[B, C, N]`` (C = 1 mono or 2 stereo, N samples) into a log-mel
"image" ``[B, C, M, T]`` (M mel bins, T frames), normalised per mel bin so that the latents have standard
deviation ``sigma_data`` (Karras et al. 2022, EDM, Sec. 5: the preconditioning assumes data of std
``sigma_data``). Decoding goes back through a vocoder that carries the :class:`MelSpec` it was trained
for; a vocoder trained on different mel settings is refused.

The mel definition follows HiFi-GAN (Kong et al. 2020, ``meldataset.py``): magnitude STFT with a
periodic Hann window, a Slaney-normalised mel filterbank (Slaney 1998, Auditory Toolbox), and
``log(clamp(mel, min=floor))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from multidiff.modalities.base import Adapter, Extent
from multidiff.modalities.mel import PRESETS, LogMel, MelSpec, mel_frame_mask
from multidiff.modalities.vocoders import GriffinLim, Vocoder

__all__ = ["PRESETS", "LogMel", "MelAdapter", "MelAdapterConfig", "MelSpec", "mel_frame_mask"]


@dataclass(frozen=True)
class MelAdapterConfig:
    """Serialisable settings of a :class:`MelAdapter`.

    Attributes:
        spec: The mel definition.
        channels: 1 (mono) or 2 (stereo, each channel its own log-mel).
        sigma_data: Target standard deviation of the normalised latents.
    """

    spec: MelSpec = dataclasses.field(default_factory=MelSpec)
    channels: int = 1
    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.spec, MelSpec):
            raise ValueError(f"MelAdapterConfig.spec must be a MelSpec, got {type(self.spec).__name__}")
        if self.channels not in (1, 2):
            raise ValueError(f"MelAdapterConfig.channels must be 1 or 2, got {self.channels!r}")
        if not self.sigma_data > 0:
            raise ValueError(f"MelAdapterConfig.sigma_data must be positive, got {self.sigma_data!r}")


class MelAdapter(Adapter):
    """Waveform <-> normalised log-mel latents, decoding through a vocoder.

    ``encode``: ``z[b, c, m, t] = sigma_data * (log_mel[b, c, m, t] - mean[m]) / std[m]`` where mean and
    std per mel bin are measured on data with :meth:`fit_stats` (identity until fitted). ``decode``
    inverts the normalisation and runs the vocoder on each channel.

    Args:
        config: Mel settings, channels and sigma_data.
        vocoder: A vocoder whose ``spec`` equals ``config.spec``; defaults to Griffin-Lim (no weights).
        mean: Optional per-bin mean ``[M]``.
        std: Optional per-bin std ``[M]``.

    Raises:
        ValueError: If the vocoder was trained for another MelSpec (both specs are named).
    """

    modality = "audio"

    def __init__(
        self,
        config: MelAdapterConfig,
        vocoder: Vocoder | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        spec = config.spec
        if vocoder is None:
            vocoder = GriffinLim(spec)
        vspec = getattr(vocoder, "spec", None)
        if vspec != spec:
            raise ValueError(
                f"vocoder {type(vocoder).__name__} was built for {vspec!r}, but the adapter uses {spec!r}; "
                "a vocoder only inverts the mel settings it was trained on"
            )
        self.logmel = LogMel(spec)
        self.vocoder = vocoder
        self.register_buffer("mean", torch.zeros(spec.n_mels))
        self.register_buffer("std", torch.ones(spec.n_mels))
        self.register_buffer("fitted", torch.tensor(False))
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        if mean is not None and std is not None:
            self.set_stats(mean, std)

    @property
    def spec(self) -> MelSpec:
        """The mel definition."""
        return self.config.spec

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-bin statistics (both ``[M]``, std > 0)."""
        m = self.spec.n_mels
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != m or std.numel() != m:
            raise ValueError(f"mean and std need {m} values, got {mean.numel()} and {std.numel()}")
        if not bool(torch.all(std > 0)) or not bool(torch.all(torch.isfinite(mean))):
            raise ValueError("std must be positive and mean finite in every mel bin")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)

    def _check_wave(self, wave: torch.Tensor) -> None:
        if wave.ndim != 3 or wave.shape[1] != self.config.channels:
            raise ValueError(
                f"expected a waveform [B, {self.config.channels}, N], got shape {tuple(wave.shape)}"
            )

    @torch.no_grad()
    def fit_stats(self, waves: Iterable[torch.Tensor], min_std: float = 1e-3) -> MelAdapter:
        """Measure the per-bin mean and std of the log-mel over all frames and channels.

        Accumulates sums in float64 so long datasets do not lose precision.

        Args:
            waves: Batches ``[B, C, N]`` (or ``[C, N]``) on any device.
            min_std: Lower bound on the std of a bin (a constant bin would divide by ~0).

        Returns:
            self, with ``mean``, ``std`` set and ``fitted`` True.
        """
        m = self.spec.n_mels
        count = 0
        s1 = torch.zeros(m, dtype=torch.float64)
        s2 = torch.zeros(m, dtype=torch.float64)
        for wave in waves:
            wave = torch.as_tensor(wave)
            if wave.ndim == 2:
                wave = wave.unsqueeze(0)
            self._check_wave(wave)
            mel = self.logmel(wave.to(self.mean.device, torch.float32)).double().cpu()  # (B, C, M, T)
            mel = mel.transpose(0, 2).reshape(m, -1)  # (M, B*C*T)
            count += mel.shape[1]
            s1 += mel.sum(1)
            s2 += (mel * mel).sum(1)
        if count < 2:
            raise ValueError("fit_stats needs at least two frames of audio")
        mean = s1 / count
        var = (s2 / count - mean * mean).clamp_min(0) * count / (count - 1)
        self.set_stats(mean.float(), var.sqrt().clamp_min(min_std).float())
        return self

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, C, N]`` -> normalised latents ``[B, C, M, T]``."""
        self._check_wave(wave)
        return self.normalise(self.logmel(wave.float()))  # (B, C, M, T)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, C, M, T]`` -> ``sigma_data * (log_mel - mean[m]) / std[m]``."""
        return self.config.sigma_data * (raw - self.mean[:, None]) / self.std[:, None]

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, M, T]`` -> log-mel ``[B, C, M, T]``."""
        return latents / self.config.sigma_data * self.std[:, None] + self.mean[:, None]

    def decode(
        self,
        latents: torch.Tensor,
        extent: Extent | None = None,
        length: int | None = None,
        *,
        vocoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Latents ``[B, C, M, T]`` -> waveform ``[B, C, N]`` through the vocoder.

        Args:
            latents: Normalised log-mel.
            extent: Trim or zero-pad the output to ``extent.seconds`` (default: the vocoder's length).
            length: The same in samples.
            vocoder: Called in place of :attr:`vocoder` on the log-mel ``[B·C, M, T]``: the same vocoder
                replayed from a CUDA graph (what :class:`~multidiff.pipeline_audio.AudioPipeline` passes).
        """
        if extent is not None and extent.seconds is not None:
            length = self.num_samples_of(extent)
        b, c, m, t = latents.shape
        if c != self.config.channels or m != self.spec.n_mels:
            raise ValueError(
                f"expected latents [B, {self.config.channels}, {self.spec.n_mels}, T], got {tuple(latents.shape)}"
            )
        mel = self.denormalise(latents.float()).reshape(b * c, m, t)  # (B*C, M, T)
        wave = (self.vocoder if vocoder is None else vocoder)(mel)  # (B*C, N)
        if length is not None:
            n = wave.shape[-1]
            wave = wave[..., :length] if n >= length else F.pad(wave, (0, length - n))
        return wave.reshape(b, c, wave.shape[-1])

    def num_samples_of(self, extent: Extent) -> int:
        """Waveform length N of ``extent.seconds``."""
        (seconds,) = extent.need("a mel adapter", "seconds")
        return int(round(seconds * self.spec.sample_rate))

    def latent_shape(self, seconds: float | Extent) -> tuple[int, int, int]:
        """Latent shape ``(C, M, T)`` for a clip of ``seconds`` (or ``Extent(seconds=...)``)."""
        n = self.num_samples_of(seconds if isinstance(seconds, Extent) else Extent(seconds=seconds))
        self.spec.check_samples(n)  # before sampling: the vocoder's STFT would fail on it after
        return (self.config.channels, self.spec.n_mels, self.spec.num_frames(n))

    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A waveform ``[N']``, ``[C, N']`` or ``[B, C, N']`` (zero-padded or cut to the extent) -> latents."""
        c = self.config.channels
        w = torch.as_tensor(media, dtype=torch.float32, device=self.mean.device)
        w = w[None] if w.ndim == 1 else w
        w = w[None] if w.ndim == 2 else w
        if w.ndim != 3 or w.shape[1] != c:
            raise ValueError(f"known audio must be [{c}, N] or [B, {c}, N], got {tuple(w.shape)}")
        n = self.num_samples_of(extent)
        w = F.pad(w, (0, max(0, n - w.shape[-1])))[..., :n]  # (B, C, N)
        return self.encode(w)  # (B, C, M, T)

    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A waveform mask ``[N']`` or ``[B, N']`` (1 = known) -> mel-frame mask ``[B or 1, 1, 1, T]``: a frame
        is known only where its whole analysis window is (:func:`~multidiff.modalities.mel.mel_frame_mask`)."""
        m = torch.as_tensor(mask, device=self.mean.device)
        return mel_frame_mask(m, self.spec, self.num_samples_of(extent))

    def num_samples(self, num_frames: int) -> int:
        """Waveform length matching ``num_frames`` latent frames."""
        return self.spec.num_samples(num_frames)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable config, including the fitted statistics (float32 values, exact round trip)."""
        d: dict[str, Any] = {
            "type": "mel",
            "spec": self.spec.to_dict(),
            "channels": self.config.channels,
            "sigma_data": self.config.sigma_data,
        }
        if bool(self.fitted):
            d["stats"] = {"mean": self.mean.cpu().tolist(), "std": self.std.cpu().tolist()}
        return d

    def to_config(self) -> dict[str, Any]:
        """:meth:`to_dict` with the vocoder's settings; refused before the statistics are fitted."""
        from multidiff.serialize import vocoder_to_dict

        d = self.to_dict()
        if "stats" not in d:
            raise ValueError(
                "the MelAdapter has no fitted statistics; call adapter.fit_stats(...) before saving"
            )
        d["vocoder"] = vocoder_to_dict(self.vocoder)
        return d

    def save(self, folder: Path) -> None:
        """A HiFi-GAN vocoder's weights into ``folder/vocoder.safetensors`` (Griffin-Lim has none)."""
        from multidiff.modalities.vocoders import HiFiGAN
        from multidiff.serialize import VOCODER_WEIGHTS_NAME, save_tensors

        if isinstance(self.vocoder, HiFiGAN):
            save_tensors(folder / VOCODER_WEIGHTS_NAME, self.vocoder.state_dict())

    @classmethod
    def load(cls, config: dict[str, Any], folder: Path) -> MelAdapter:
        """Rebuild from :meth:`to_config` and the vocoder weights :meth:`save` wrote."""
        from multidiff.modalities.vocoders import HiFiGAN, HiFiGANConfig
        from multidiff.nn.io import load_matching_state
        from multidiff.serialize import CONFIG_NAME, VOCODER_WEIGHTS_NAME

        d = dict(config)
        v = d.pop("vocoder", None) or {"type": "griffinlim"}
        spec = MelSpec.from_dict(d["spec"])
        if v["type"] == "griffinlim":
            vocoder: Vocoder = GriffinLim(
                spec,
                n_iter=int(v.get("n_iter", 64)),
                momentum=float(v.get("momentum", 0.99)),
                nnls_iter=int(v.get("nnls_iter", 100)),
            )
        elif v["type"] == "hifigan":
            vocoder = HiFiGAN(HiFiGANConfig.from_dict(v["config"]), MelSpec.from_dict(v["spec"]))
            vocoder.load_state_dict(
                load_matching_state(folder / VOCODER_WEIGHTS_NAME, vocoder.state_dict(), "vocoder")
            )
            vocoder.eval()
        else:
            raise ValueError(
                f"{folder / CONFIG_NAME}: unknown vocoder type {v['type']!r}; known: griffinlim, hifigan"
            )
        return cls.from_dict(d, vocoder)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], vocoder: Vocoder | None = None) -> MelAdapter:
        """Rebuild from :meth:`to_dict` output; the vocoder (default Griffin-Lim) is passed separately."""
        if "type" in d and d["type"] != "mel":
            raise ValueError(f"not a mel adapter config: type={d['type']!r}")
        config = MelAdapterConfig(
            spec=MelSpec.from_dict(d["spec"]), channels=int(d["channels"]), sigma_data=float(d["sigma_data"])
        )
        if "stats" not in d:
            return cls(config, vocoder)
        stats = d["stats"]
        return cls(config, vocoder, torch.tensor(stats["mean"]), torch.tensor(stats["std"]))
