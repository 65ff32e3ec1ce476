"""Audio as log-mel spectrograms: the mel definition, the log-mel transform and the mel adapter.

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
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from multidiff.nn.io import config_from_dict

if TYPE_CHECKING:
    from multidiff.modalities.vocoders import Vocoder

__all__ = ["PRESETS", "LogMel", "MelAdapter", "MelAdapterConfig", "MelSpec"]

_PAD_MODES = ("reflect", "constant", "replicate", "circular")


@dataclass(frozen=True)
class MelSpec:
    """Everything that defines a log-mel spectrogram; a vocoder is only valid for the spec it was trained on.

    The frame grid: the signal is padded, then cut into frames of ``n_fft`` samples every ``hop_length``
    samples. With ``center=True`` the padding is ``n_fft // 2`` on each side (librosa and ``torch.stft``
    convention), so frame t is centred on sample ``t * hop_length``. With ``center=False`` the padding is
    ``edge_pad`` on each side; HiFi-GAN uses ``edge_pad = (n_fft - hop_length) // 2`` so that
    ``T = N // hop_length`` exactly.

    Attributes:
        sample_rate: Sampling rate in Hz.
        n_fft: FFT size; the spectrum has ``n_fft // 2 + 1`` bins.
        win_length: Hann window length (<= n_fft; zero-padded to n_fft, centred).
        hop_length: Frame step in samples.
        n_mels: Number of mel bins M.
        fmin: Lowest filter edge in Hz.
        fmax: Highest filter edge in Hz (<= sample_rate / 2).
        mel_scale: ``"slaney"`` (linear below 1 kHz, log above; librosa's default) or ``"htk"``
            (``2595 log10(1 + f / 700)``).
        norm: ``"slaney"`` (each triangle has unit area in Hz) or None (unit peak).
        power: 1 for a magnitude spectrogram, 2 for a power spectrogram.
        log_floor: The mel values are clamped to at least this before the natural log.
        center: Pad ``n_fft // 2`` on each side (True) or ``edge_pad`` on each side (False).
        pad_mode: Padding mode for ``center`` or ``edge_pad``: reflect, constant, replicate or circular.
        edge_pad: Samples padded on each side when ``center`` is False.
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    mel_scale: str = "slaney"
    norm: str | None = "slaney"
    power: int = 1
    log_floor: float = 1e-5
    center: bool = False
    pad_mode: str = "reflect"
    edge_pad: int = 384

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MelSpec.{name} must be a positive int, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"MelSpec.win_length={self.win_length} must not exceed n_fft={self.n_fft}")
        if not 0.0 <= self.fmin < self.fmax:
            raise ValueError(f"MelSpec needs 0 <= fmin < fmax, got fmin={self.fmin!r}, fmax={self.fmax!r}")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(
                f"MelSpec.fmax={self.fmax!r} exceeds the Nyquist frequency {self.sample_rate / 2} "
                f"of sample_rate={self.sample_rate}"
            )
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"MelSpec.mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.norm not in ("slaney", None):
            raise ValueError(f"MelSpec.norm must be 'slaney' or None, got {self.norm!r}")
        if self.power not in (1, 2) or isinstance(self.power, bool):
            raise ValueError(f"MelSpec.power must be 1 (magnitude) or 2 (power), got {self.power!r}")
        if not (isinstance(self.log_floor, (int, float)) and self.log_floor > 0):
            raise ValueError(f"MelSpec.log_floor must be a positive float, got {self.log_floor!r}")
        if self.pad_mode not in _PAD_MODES:
            raise ValueError(f"MelSpec.pad_mode must be one of {_PAD_MODES}, got {self.pad_mode!r}")
        if not isinstance(self.edge_pad, int) or self.edge_pad < 0:
            raise ValueError(f"MelSpec.edge_pad must be a non-negative int, got {self.edge_pad!r}")
        if self.center and self.edge_pad != 0:
            raise ValueError(
                f"MelSpec.edge_pad={self.edge_pad} only applies when center=False; with center=True "
                "the padding is n_fft // 2, so set edge_pad=0"
            )
        n_bins = self.n_fft // 2 + 1
        if self.n_mels > n_bins:
            raise ValueError(
                f"MelSpec.n_mels={self.n_mels} exceeds the {n_bins} FFT bins of n_fft={self.n_fft}"
            )

    @property
    def n_freqs(self) -> int:
        """Number of linear-frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def pad(self) -> int:
        """Samples padded on each side before framing."""
        return self.n_fft // 2 if self.center else self.edge_pad

    def num_frames(self, num_samples: int) -> int:
        """Frames T produced from ``num_samples`` samples: ``1 + (N + 2 pad - n_fft) // hop``."""
        if num_samples + 2 * self.pad < self.n_fft:
            raise ValueError(
                f"{num_samples} samples are too few for one frame of n_fft={self.n_fft} "
                f"with {self.pad} samples of padding per side"
            )
        return 1 + (num_samples + 2 * self.pad - self.n_fft) // self.hop_length

    def num_samples(self, num_frames: int) -> int:
        """The shortest signal length N that gives ``num_frames`` frames."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return max(1, (num_frames - 1) * self.hop_length + self.n_fft - 2 * self.pad)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MelSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError."""
        return config_from_dict(cls, dict(d), source="MelSpec.from_dict")

    def fingerprint(self) -> str:
        """A short stable hash of the spec (16 hex digits), used to key latent caches."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


PRESETS: dict[str, MelSpec] = {
    # Kong et al. 2020, HiFi-GAN V1 / UNIVERSAL_V1 config and meldataset.mel_spectrogram.
    "hifigan-22k": MelSpec(),
    # Liu et al. 2023, AudioLDM: 16 kHz, 64 mels, hop 160 (100 frames/s), Tacotron-style centred STFT.
    "audioldm-16k": MelSpec(
        sample_rate=16000,
        n_fft=1024,
        win_length=1024,
        hop_length=160,
        n_mels=64,
        fmin=0.0,
        fmax=8000.0,
        center=True,
        pad_mode="reflect",
        edge_pad=0,
    ),
}


class LogMel(nn.Module):
    """Log-mel spectrogram ``log(clamp(fb^T |STFT(x)|^power, floor))`` on any device.

    The Hann window and the mel filterbank are buffers (torchaudio ``Spectrogram`` and ``MelScale``), so
    ``.to(device)`` moves them and no module-level cache exists. Matches
    ``librosa.feature.melspectrogram`` with the same settings followed by the same log.

    Args:
        spec: The mel definition.
    """

    def __init__(self, spec: MelSpec) -> None:
        super().__init__()
        import torchaudio

        self.spec = spec
        self.stft = torchaudio.transforms.Spectrogram(
            n_fft=spec.n_fft,
            win_length=spec.win_length,
            hop_length=spec.hop_length,
            pad=0,
            window_fn=torch.hann_window,
            power=float(spec.power),
            normalized=False,
            center=spec.center,
            pad_mode=spec.pad_mode,
            onesided=True,
        )
        self.mel = torchaudio.transforms.MelScale(
            n_mels=spec.n_mels,
            sample_rate=spec.sample_rate,
            f_min=float(spec.fmin),
            f_max=float(spec.fmax),
            n_stft=spec.n_freqs,
            norm=spec.norm,
            mel_scale=spec.mel_scale,
        )

    @property
    def filterbank(self) -> torch.Tensor:
        """The mel filterbank, shape ``[n_freqs, M]``."""
        return self.mel.fb

    def mel_linear(self, wave: torch.Tensor) -> torch.Tensor:
        """Mel spectrogram before the log: ``[..., N] -> [..., M, T]``."""
        if wave.shape[-1] + 2 * self.spec.pad < self.spec.n_fft:
            raise ValueError(
                f"a signal of {wave.shape[-1]} samples is too short for n_fft={self.spec.n_fft} "
                f"with {self.spec.pad} samples of padding per side"
            )
        lead = wave.shape[:-1]
        x = wave.reshape(-1, wave.shape[-1])  # (B*C, N)
        if not self.spec.center and self.spec.edge_pad > 0:
            p = self.spec.edge_pad
            x = F.pad(x.unsqueeze(1), (p, p), mode=self.spec.pad_mode).squeeze(1)  # (B*C, N + 2p)
        spec = self.stft(x)  # (B*C, n_freqs, T)
        mel = self.mel(spec)  # (B*C, M, T)
        return mel.reshape(*lead, *mel.shape[-2:])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel of a waveform.

        Args:
            wave: ``[B, C, N]`` (any leading axes are kept).

        Returns:
            ``[B, C, M, T]`` with ``T = spec.num_frames(N)``.
        """
        return torch.log(torch.clamp(self.mel_linear(wave), min=self.spec.log_floor))


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


class MelAdapter(nn.Module):
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

    def __init__(
        self,
        config: MelAdapterConfig,
        vocoder: Vocoder | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        from multidiff.modalities.vocoders import GriffinLim

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
        mel = self.logmel(wave.float())  # (B, C, M, T)
        return self.config.sigma_data * (mel - self.mean[:, None]) / self.std[:, None]

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, M, T]`` -> log-mel ``[B, C, M, T]``."""
        return latents / self.config.sigma_data * self.std[:, None] + self.mean[:, None]

    def decode(self, latents: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Latents ``[B, C, M, T]`` -> waveform ``[B, C, N]`` through the vocoder.

        Args:
            latents: Normalised log-mel.
            length: Trim or zero-pad the output to this many samples (default: the vocoder's length).
        """
        b, c, m, t = latents.shape
        if c != self.config.channels or m != self.spec.n_mels:
            raise ValueError(
                f"expected latents [B, {self.config.channels}, {self.spec.n_mels}, T], got {tuple(latents.shape)}"
            )
        mel = self.denormalise(latents.float()).reshape(b * c, m, t)  # (B*C, M, T)
        wave = self.vocoder(mel)  # (B*C, N)
        if length is not None:
            n = wave.shape[-1]
            wave = wave[..., :length] if n >= length else F.pad(wave, (0, length - n))
        return wave.reshape(b, c, wave.shape[-1])

    def latent_shape(self, seconds: float) -> tuple[int, int, int]:
        """Latent shape ``(C, M, T)`` for a clip of ``seconds``."""
        n = int(round(seconds * self.spec.sample_rate))
        return (self.config.channels, self.spec.n_mels, self.spec.num_frames(n))

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
