"""Audio files through soundfile (libsndfile): probe, read (resampled, mono or multichannel), atomic write."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multidiff.atomic import replacing, write_error
from multidiff.io.common import (
    AudioFileError,
    check_exists,
)

# extension -> (libsndfile format, default subtype)
AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}


@dataclass(frozen=True)
class AudioInfo:
    """What ``soundfile.info`` reports about a file.

    Attributes:
        sample_rate: Sampling rate in Hz.
        frames: Samples per channel.
        channels: Channel count.
        format: libsndfile container name (e.g. ``"WAV"``).
        subtype: libsndfile sample encoding (e.g. ``"PCM_16"``).
    """

    sample_rate: int
    frames: int
    channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Read the header of an audio file without decoding it.

    Raises:
        FileNotFoundError: If the file does not exist.
        AudioFileError: If it is empty, not audio, truncated or in a format libsndfile cannot read.
    """
    import soundfile as sf

    path = Path(path)
    check_exists(path)
    try:
        info = sf.info(str(path))
    except (RuntimeError, TypeError, ValueError) as err:  # LibsndfileError is a RuntimeError
        raise AudioFileError(path, f"not a readable audio file ({err})") from err
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioFileError(
            path, f"invalid header (sample rate {info.samplerate}, {info.channels} channels)"
        )
    return AudioInfo(
        int(info.samplerate), int(info.frames), int(info.channels), str(info.format), str(info.subtype)
    )


def read_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None = None,
    mono: bool = False,
    *,
    start: int = 0,
    frames: int = -1,
) -> tuple[torch.Tensor, int]:
    """Decode an audio file to float32 in [-1, 1].

    Args:
        path: Any format libsndfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1, ...).
        sample_rate: Resample to this rate (``torchaudio.functional.resample``) if it differs.
        mono: Average the channels into one.
        start: First sample to read, in the file's own rate.
        frames: Samples to read from ``start`` in the file's own rate (-1: to the end).

    Returns:
        ``(wave [C, N], sample_rate)``.

    Raises:
        FileNotFoundError: If the file does not exist.
        AudioFileError: If it cannot be decoded; the message names the file and the reason.
    """
    import soundfile as sf

    path = Path(path)
    check_exists(path)
    try:
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)  # (N, C)
    except (RuntimeError, TypeError, ValueError) as err:
        raise AudioFileError(path, f"could not decode audio ({err})") from err
    wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, N)
    if mono and wave.shape[0] > 1:
        wave = wave.mean(0, keepdim=True)
    if sample_rate is not None and sample_rate != sr:
        import torchaudio

        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        wave = torchaudio.functional.resample(wave, int(sr), int(sample_rate))
        sr = sample_rate
    return wave, int(sr)


def _as_array(wave: Any) -> np.ndarray:
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(wave, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"expected a waveform [C, N] or [N] with N > 0, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("the waveform contains NaN or infinite samples")
    return arr


def write_audio(
    path: str | os.PathLike[str],
    wave: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> Path:
    """Write a waveform atomically; the format follows the extension (.wav, .flac, .ogg).

    Samples are clipped to [-1, 1] unless ``subtype`` is ``"FLOAT"`` or ``"DOUBLE"``.

    Args:
        path: Destination; its folder must exist.
        wave: ``[C, N]`` (channels first) or ``[N]``, float.
        sample_rate: Sampling rate in Hz.
        subtype: libsndfile subtype (default PCM_16 for wav/flac, VORBIS for ogg).

    Returns:
        The destination path.

    Raises:
        ValueError: For an unsupported extension or subtype, or a bad waveform (the file is named).
    """
    import soundfile as sf

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in AUDIO_FORMATS:
        raise ValueError(
            f"cannot write {path}: unsupported extension {ext!r}; use one of {sorted(AUDIO_FORMATS)}"
        )
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"cannot write {path}: sample_rate must be a positive int, got {sample_rate!r}")
    fmt, default_subtype = AUDIO_FORMATS[ext]
    subtype = subtype or default_subtype
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"cannot write {path}: subtype {subtype!r} is not valid for {fmt}")
    arr = _as_array(wave)
    if subtype not in ("FLOAT", "DOUBLE"):
        arr = np.clip(arr, -1.0, 1.0)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    with replacing(path) as tmp:
        try:
            sf.write(str(tmp), arr.T, sample_rate, subtype=subtype, format=fmt)  # soundfile wants (N, C)
        except (RuntimeError, OSError) as err:  # LibsndfileError says "System error." for a full disk
            raise write_error(err, path) from err
    return path
