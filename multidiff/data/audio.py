"""A dataset over a folder of audio files: probe once, skip bad files loudly, crop deterministically.

Every file is checked once at construction (header with ``soundfile.info``; with ``scan_content`` the
samples too). Empty, truncated, non-audio, silent and too-short files are skipped: each gets a
:class:`SkippedFileWarning` naming the file and the reason (the first ``max_warnings``), a summary
warning gives the count, and ``dataset.skipped`` keeps every ``(path, reason)``. Crops depend only on
``(seed, epoch, index)``, so a resumed run sees exactly the same data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from multidiff.data.common import LABEL_MODES as _LABEL_MODES
from multidiff.data.common import SkippedFileWarning, select_files, warn_skipped
from multidiff.io import AudioFileError, AudioInfo, probe_audio, read_audio
from multidiff.modalities.audio import LogMel, MelSpec

__all__ = ["AudioFolder", "AudioFolderConfig", "SkippedFileWarning"]

_LOUDNESS = ("rms", "peak", None)
# libsndfile logs "data : <announced> (should be <present>)" for a WAV whose data chunk is cut short.
_TRUNCATED_WAV = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_BLOCK = 1 << 18


@dataclass(frozen=True)
class AudioFolderConfig:
    """How an :class:`AudioFolder` decodes, selects and crops its files.

    Attributes:
        sample_rate: Every clip is resampled to this rate.
        clip_seconds: Crop (or pad) every item to this length; None returns whole files.
        channels: 1 averages all channels; 2 keeps the first two and duplicates mono files.
        loudness: ``"rms"`` scales each file to an RMS of ``target_db`` dBFS (never beyond a peak of 1),
            ``"peak"`` scales its peak to ``target_db`` dBFS, None leaves it.
        target_db: Loudness target in dBFS (e.g. -20 for RMS, -1 for peak).
        random_crop: Random crop start (deterministic in seed, epoch, index); False crops from the start.
        min_seconds: Files shorter than this are skipped as too short.
        silence_db: Files whose peak lies below this (dBFS) are skipped as silent.
        labels: ``"auto"`` (metadata.csv if present, else subfolder names if every file is in one, else
            none), ``"folders"``, ``"metadata"`` or ``"none"``.
        extensions: File suffixes to consider (lower case).
        scan_content: Decode every file once at construction to find silent and unreadable data and to
            measure per-file loudness; False only reads headers (loudness is then measured per crop).
        seed: Base seed of the crop positions.
        return_wave: Include the waveform in items (may be False when a mel cache is used).
    """

    sample_rate: int = 22050
    clip_seconds: float | None = None
    channels: int = 1
    loudness: str | None = "rms"
    target_db: float = -20.0
    random_crop: bool = True
    min_seconds: float = 0.1
    silence_db: float = -60.0
    labels: str = "auto"
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
    scan_content: bool = True
    seed: int = 0
    return_wave: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ValueError(
                f"AudioFolderConfig.sample_rate must be a positive int, got {self.sample_rate!r}"
            )
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            raise ValueError(
                f"AudioFolderConfig.clip_seconds must be positive or None, got {self.clip_seconds!r}"
            )
        if self.channels not in (1, 2):
            raise ValueError(f"AudioFolderConfig.channels must be 1 or 2, got {self.channels!r}")
        if self.loudness not in _LOUDNESS:
            raise ValueError(f"AudioFolderConfig.loudness must be one of {_LOUDNESS}, got {self.loudness!r}")
        if self.loudness is not None and not self.target_db < 0:
            raise ValueError(f"AudioFolderConfig.target_db must be below 0 dBFS, got {self.target_db!r}")
        if not self.min_seconds >= 0:
            raise ValueError(f"AudioFolderConfig.min_seconds must be >= 0, got {self.min_seconds!r}")
        if self.labels not in _LABEL_MODES:
            raise ValueError(f"AudioFolderConfig.labels must be one of {_LABEL_MODES}, got {self.labels!r}")
        object.__setattr__(self, "extensions", tuple(e.lower() for e in self.extensions))
        if not self.extensions or not all(e.startswith(".") for e in self.extensions):
            raise ValueError(
                f"AudioFolderConfig.extensions must be suffixes like '.wav', got {self.extensions!r}"
            )

    @property
    def clip_samples(self) -> int | None:
        """Clip length in samples at ``sample_rate``."""
        return None if self.clip_seconds is None else int(round(self.clip_seconds * self.sample_rate))


@dataclass(frozen=True)
class _Entry:
    path: Path
    rel: str
    info: AudioInfo
    gain: float | None  # None: measured per item
    label: str | None
    caption: str | None


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def _mix(block: np.ndarray, channels: int) -> np.ndarray:
    """(N, C_file) -> (N, channels)."""
    if channels == 1:
        return block.mean(axis=1, keepdims=True)
    if block.shape[1] == 1:
        return np.repeat(block, 2, axis=1)
    return block[:, :2]


class AudioFolder(Dataset):
    """Audio files under a folder (recursively), as fixed-length clips with a padding mask.

    Items are dicts: ``wave`` ``[C, N]`` float32, ``mask`` ``[N]`` bool (True on real audio),
    ``index``, ``path`` (relative), ``label`` (int, when labelled) and ``caption`` (str, when the
    metadata has captions). With ``spec`` and ``cache_dir``, items also carry ``mel`` ``[C, M, T]`` and
    ``mel_mask`` ``[T]``, read from a per-file safetensors cache keyed by ``spec.fingerprint()``; crops
    then start on a hop boundary so the wave and mel crops align.

    Args:
        root: The folder. Labels come from ``root/metadata.csv`` (columns ``path`` and ``label`` and/or
            ``caption``) or from the first subfolder below ``root``.
        config: Decoding and cropping settings; keyword arguments build one if omitted.
        spec: Mel settings for the latent cache (its sample rate must equal the config's).
        cache_dir: Folder of the mel cache (needs ``spec``).
        max_warnings: Per-file warnings shown before only the summary remains.
        **kwargs: Fields of :class:`AudioFolderConfig` when ``config`` is None.

    Raises:
        ValueError: If no usable file remains (the folder is named), or on bad metadata.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: AudioFolderConfig | None = None,
        *,
        spec: MelSpec | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_warnings: int = 20,
        **kwargs: Any,
    ) -> None:
        if config is None:
            config = AudioFolderConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either config or keyword settings, not both (got {sorted(kwargs)})")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"audio folder {self.root} does not exist or is not a folder")
        if cache_dir is not None and spec is None:
            raise ValueError("cache_dir needs a MelSpec (spec=...) to key the cache")
        if spec is not None and spec.sample_rate != config.sample_rate:
            raise ValueError(
                f"spec.sample_rate={spec.sample_rate} differs from the dataset sample_rate={config.sample_rate}"
            )
        if not config.return_wave and cache_dir is None:
            raise ValueError("return_wave=False only makes sense with a mel cache (cache_dir=...)")
        self.config = config
        self.spec = spec
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / spec.fingerprint()  # type: ignore[union-attr]
        self._logmel = LogMel(spec) if spec is not None and cache_dir is not None else None
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        self._waves: list[torch.Tensor] | None = None  # every file decoded at the target rate (preload)

        candidates, labels, captions = self._select_files()
        n_files = len(candidates) + len(self.skipped)  # skipped so far: not in metadata / not in a subfolder
        entries = []
        for path, rel in candidates:
            try:
                entries.append(self._probe(path, rel, labels.get(rel), captions.get(rel)))
            except AudioFileError as err:
                self.skipped.append((str(path), err.reason))
        self.entries: list[_Entry] = entries
        self._warn_skipped(n_files, max_warnings)
        if not entries:
            raise ValueError(
                f"audio folder {self.root} has no usable audio file "
                f"({len(candidates)} candidates, {len(self.skipped)} skipped)"
            )
        names = sorted({e.label for e in entries if e.label is not None})
        self.classes: list[str] = names
        self._class_index = {name: i for i, name in enumerate(names)}

    # ----------------------------------------------------------------------------------- scanning
    def _select_files(self) -> tuple[list[tuple[Path, str]], dict[str, str], dict[str, str]]:
        return select_files(self.root, self.config.labels, self.config.extensions, self.skipped)

    def _probe(self, path: Path, rel: str, label: str | None, caption: str | None) -> _Entry:
        import soundfile as sf

        cfg = self.config
        info = probe_audio(path)
        if info.frames <= 0:
            raise AudioFileError(path, "no audio frames")
        if info.format == "WAV":
            log = sf.info(str(path), verbose=True).extra_info
            m = _TRUNCATED_WAV.search(log)
            if m and 0 < int(m.group(2)) < int(m.group(1)) < 0xFFFFFFFF:
                raise AudioFileError(
                    path,
                    f"truncated: the header announces {m.group(1)} data bytes, the file holds {m.group(2)}",
                )
        if info.duration < cfg.min_seconds:
            raise AudioFileError(path, f"too short ({info.duration:.3f} s < min_seconds={cfg.min_seconds})")
        gain: float | None = None
        if cfg.scan_content:
            peak, sq, n, done = 0.0, 0.0, 0, 0
            try:
                for block in sf.blocks(str(path), blocksize=_BLOCK, dtype="float32", always_2d=True):
                    bad = ~np.isfinite(block).all(axis=1)  # every block to the end, not only the first
                    if bad.any():
                        at = (done + int(np.argmax(bad))) / info.sample_rate
                        raise AudioFileError(
                            path, f"contains NaN or infinite samples (the first at {at:.2f} s)"
                        )
                    done += block.shape[0]
                    block = _mix(block, cfg.channels)
                    peak = max(peak, float(np.abs(block).max(initial=0.0)))
                    sq += float(np.square(block, dtype=np.float64).sum())
                    n += block.size
            except (RuntimeError, ValueError) as err:
                raise AudioFileError(path, f"could not decode the audio data ({err})") from err
            if n == 0:
                raise AudioFileError(path, "no audio frames could be decoded")
            if _db(peak) < cfg.silence_db:
                raise AudioFileError(
                    path, f"silent (peak {_db(peak):.1f} dBFS < silence_db={cfg.silence_db})"
                )
            gain = self._gain(peak, math.sqrt(sq / n))
        return _Entry(path, rel, info, gain, label, caption)

    def _gain(self, peak: float, rms: float) -> float:
        cfg = self.config
        if cfg.loudness is None or peak <= 0:
            return 1.0
        target = 10.0 ** (cfg.target_db / 20.0)
        if cfg.loudness == "peak":
            return target / peak
        return min(target / max(rms, 1e-12), 1.0 / peak)  # RMS target, but never clip

    def _warn_skipped(self, n_files: int, max_warnings: int) -> None:
        warn_skipped("audio", self.root, self.skipped, n_files, max_warnings)

    # ----------------------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the crop positions of an epoch (call before iterating, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, self.epoch)

    def _load(self, entry: _Entry, start: int, frames: int) -> torch.Tensor:
        """Read ``frames`` samples from ``start`` (both at the target rate), mixed to the channel policy."""
        cfg = self.config
        sr_src, sr = entry.info.sample_rate, cfg.sample_rate
        if sr_src == sr:
            wave, _ = read_audio(entry.path, start=start, frames=frames)
        else:
            # Read a margin around the crop so the resampling filter sees real context at both ends;
            # the margin is a whole number of resampling periods, so it maps to an integer at `sr`.
            g = math.gcd(sr_src, sr)
            period_src, period_dst = sr_src // g, sr // g
            periods = max(1, math.ceil(64 / period_src))
            src_start = (start * sr_src) // sr  # exact when start is a multiple of period_dst
            left = min(src_start // period_src, periods)
            src_frames = -1 if frames < 0 else math.ceil(frames * sr_src / sr) + 2 * periods * period_src
            wave, _ = read_audio(
                entry.path, sample_rate=sr, start=src_start - left * period_src, frames=src_frames
            )
            wave = wave[:, left * period_dst :]
            if frames >= 0:
                wave = wave[:, :frames]
        data = _mix(wave.T.numpy(), cfg.channels).T  # (C, N)
        return torch.from_numpy(np.ascontiguousarray(data))

    def preload(self, workers: int = 8, max_bytes: int = 2**31, progress: bool = True) -> bool:
        """Decode every file once, whole and at the target rate, into memory (float32), so that items are
        slices of it and data loading never waits on a decoder or a resampler (DataLoader workers share it
        copy-on-write). Returns False, loading nothing, when the decoded set would exceed ``max_bytes``.

        Crops are cut from the whole resampled file, which can differ from resampling the crop's window
        alone in the last digits near its ends; a run uses one or the other throughout.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        need = sum(self._target_length(e) * self.config.channels * 4 for e in self.entries)
        if need > max_bytes:
            return False
        with ThreadPoolExecutor(max(1, workers)) as pool:
            done = pool.map(lambda e: self._load(e, 0, -1), self.entries)
            waves = list(tqdm(done, total=len(self), desc="decode", unit="file", disable=not progress))
        self._waves = waves
        return True

    def _target_length(self, entry: _Entry) -> int:
        return math.ceil(entry.info.frames * self.config.sample_rate / entry.info.sample_rate)

    def crop_start(self, index: int, epoch: int) -> int:
        """The crop start (samples at the target rate) of item ``index`` in ``epoch``."""
        clip = self.config.clip_samples
        n = self._target_length(self.entries[index])
        if clip is None or n <= clip or not self.config.random_crop:
            return 0
        rng = np.random.default_rng([self.config.seed, epoch, index])
        # Starts are multiples of `quantum`: of the resampling period when the file's rate differs (so
        # the crop lands on the same sample grid as resampling the whole file), and of the hop when a
        # mel cache is used (so the wave and mel crops align).
        sr_src, sr = self.entries[index].info.sample_rate, self.config.sample_rate
        quantum = sr // math.gcd(sr_src, sr)
        if self.cache_dir is not None:
            quantum = math.lcm(quantum, self.spec.hop_length)  # type: ignore[union-attr]
        return quantum * int(rng.integers(0, (n - clip) // quantum + 1))

    def get(self, index: int, epoch: int = 0) -> dict[str, Any]:
        """Item ``index`` with the crop of ``epoch`` (deterministic)."""
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {len(self.entries)} files")
        cfg, entry = self.config, self.entries[index]
        clip = cfg.clip_samples
        start = self.crop_start(index, epoch)
        item: dict[str, Any] = {"index": index, "path": entry.rel}
        if entry.label is not None:
            item["label"] = self._class_index[entry.label]
        if entry.caption is not None:
            item["caption"] = entry.caption
        if cfg.return_wave:
            if self._waves is not None:  # decoded once (preload)
                whole = self._waves[index]
                wave = whole[:, start:] if clip is None else whole[:, start : start + clip]  # (C, n)
            else:
                wave = self._load(entry, start, -1 if clip is None else clip)  # (C, n)
            gain = entry.gain
            if gain is None:
                peak = float(wave.abs().max()) if wave.numel() else 0.0
                gain = self._gain(peak, float(wave.square().mean().sqrt()) if wave.numel() else 0.0)
            wave = wave * gain
            n_valid = wave.shape[1]
            length = n_valid if clip is None else clip
            mask = torch.zeros(length, dtype=torch.bool)
            mask[:n_valid] = True
            if n_valid < length:
                wave = torch.nn.functional.pad(wave, (0, length - n_valid))
            item["wave"], item["mask"] = wave.float(), mask
        if self.cache_dir is not None:
            item.update(self._mel_item(index, start))
        return item

    # ----------------------------------------------------------------------------------- mel cache
    def cache_path(self, index: int) -> Path:
        """Where the mel of file ``index`` is cached (keyed by spec, file identity and decoding settings)."""
        if self.cache_dir is None:
            raise ValueError("this AudioFolder has no cache_dir")
        entry = self.entries[index]
        st = entry.path.stat()
        cfg = dataclasses.asdict(self.config)
        key = f"{entry.rel}|{st.st_size}|{st.st_mtime_ns}|{cfg['channels']}|{cfg['loudness']}|{cfg['target_db']}"
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    def _full_mel(self, index: int) -> torch.Tensor:
        from safetensors.torch import load_file

        from multidiff.atomic import replacing
        from multidiff.io.common import save_safetensors

        entry = self.entries[index]
        path = self.cache_path(index)
        if path.is_file():
            return load_file(str(path))["mel"]
        wave = self._load(entry, 0, -1)  # (C, N)
        gain = entry.gain
        if gain is None:
            gain = self._gain(float(wave.abs().max()), float(wave.square().mean().sqrt()))
        with torch.no_grad():
            mel = self._logmel(wave * gain).contiguous()  # type: ignore[misc]  # (C, M, T)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            save_safetensors({"mel": mel}, tmp, metadata={"path": entry.rel, "spec": self.spec.fingerprint()})  # type: ignore[union-attr]
        return mel

    def _mel_item(self, index: int, start: int) -> dict[str, torch.Tensor]:
        spec = self.spec
        if spec is None:
            raise ValueError("the mel cache needs a MelSpec")
        mel = self._full_mel(index)  # (C, M, T_full)
        clip = self.config.clip_samples
        if clip is None:
            return {"mel": mel, "mel_mask": torch.ones(mel.shape[-1], dtype=torch.bool)}
        k, t_clip = start // spec.hop_length, spec.num_frames(clip)
        crop = mel[..., k : k + t_clip]
        mel_mask = torch.zeros(t_clip, dtype=torch.bool)
        mel_mask[: crop.shape[-1]] = True
        if crop.shape[-1] < t_clip:
            crop = torch.nn.functional.pad(crop, (0, t_clip - crop.shape[-1]), value=math.log(spec.log_floor))
        return {"mel": crop.contiguous(), "mel_mask": mel_mask}
