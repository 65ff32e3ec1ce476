"""The mel definition and the log-mel transform, shared by the mel adapter and the vocoders.

The mel definition follows HiFi-GAN (Kong et al. 2020, ``meldataset.py``): magnitude STFT with a periodic
Hann window, a Slaney-normalised mel filterbank (Slaney 1998, Auditory Toolbox), and
``log(clamp(mel, min=floor))``. A vocoder carries the :class:`MelSpec` it was trained for, so this module
sits below both :mod:`multidiff.modalities.audio` and :mod:`multidiff.modalities.vocoders`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multidiff.nn.io import config_from_dict

__all__ = ["PRESETS", "LogMel", "MelSpec", "mel_frame_mask"]

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

    @property
    def min_samples(self) -> int:
        """The shortest signal these settings take: one frame of n_fft after padding, more samples than a
        reflected edge pads, and more than n_fft // 2 (Griffin-Lim's centred STFT reflects that many)."""
        reflect = self.pad + 1 if self.pad_mode == "reflect" else 0
        return max(self.n_fft - 2 * self.pad, reflect, self.n_fft // 2 + 1)

    def check_samples(self, num_samples: int) -> None:
        """Refuse (ValueError) a signal shorter than :attr:`min_samples`, which the STFT cannot frame."""
        if num_samples < self.min_samples:
            raise ValueError(
                f"{num_samples} samples are too few for these mel settings: at least {self.min_samples} "
                f"({self.min_samples / self.sample_rate:.3f} s at {self.sample_rate} Hz) for n_fft={self.n_fft} "
                f"with {self.pad} samples of padding per side"
            )

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
        self.spec.check_samples(wave.shape[-1])  # a signal too short for these settings: one line
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


def mel_frame_mask(mask: torch.Tensor, spec: MelSpec, num_samples: int | None = None) -> torch.Tensor:
    """A waveform mask ``[N]`` or ``[B, N]`` (1 = known / real) -> a mel-frame mask ``[B or 1, 1, 1, T]``.

    A frame counts only where its whole analysis window (``n_fft`` samples) is inside the mask, so no
    kept frame mixes in generated or padded audio. The signal edges use the nearest sample's value (as
    the reflect/replicate padding of the STFT does).

    Args:
        mask: Samples, bool or float in [0, 1].
        spec: The :class:`MelSpec`.
        num_samples: Pad (with 0) or cut the mask to this length first.
    """
    m = mask.float()
    if m.ndim == 1:
        m = m[None]
    if m.ndim != 2:
        raise ValueError(f"an audio mask must be [N] or [B, N] (samples), got shape {tuple(m.shape)}")
    if num_samples is not None:
        m = F.pad(m, (0, max(0, num_samples - m.shape[-1])))[:, :num_samples]  # (B, N)
    m = F.pad(m[:, None], (spec.pad, spec.pad), mode="replicate")  # (B, 1, N + 2·pad)
    unknown = F.max_pool1d(1 - m, kernel_size=spec.n_fft, stride=spec.hop_length)  # (B, 1, T)
    return (1 - unknown)[:, :, None, :]  # (B, 1, 1, T)
