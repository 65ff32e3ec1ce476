"""Errors about media files and the checks every reader and writer shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from multidiff.atomic import write_error


class MediaFileError(ValueError):
    """A media file cannot be used; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class MediaNotFoundError(MediaFileError, FileNotFoundError):
    """A media file does not exist (a ValueError and a FileNotFoundError)."""


class AudioFileError(MediaFileError):
    """An audio file exists but cannot be read (empty, truncated, not audio, unsupported format)."""


class VideoFileError(MediaFileError):
    """A video file cannot be read: empty, truncated, not a video, no video stream, unknown frame rate."""


class ImageFileError(MediaFileError):
    """An image file cannot be read: empty, truncated or not an image."""


def check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioFileError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioFileError(path, "empty file (0 bytes)")


def check_media_file(path: Path, error: type[MediaFileError]) -> None:
    if not path.exists():
        raise MediaNotFoundError(path, "file not found")
    if not path.is_file():
        raise error(path, "not a regular file")
    if path.stat().st_size == 0:
        raise error(path, "empty file (0 bytes)")


def free_path(path: Path, overwrite: bool = False, also: tuple[str, ...] = ()) -> Path:
    """``path`` itself when it does not exist yet (or ``overwrite``), else the first free
    ``NAME-2.EXT``, ``NAME-3.EXT``, ...: a writer that asks here never replaces an existing file. ``also``:
    suffixes of companion files written beside it (``(".png",)``), which must be free under the name too."""
    path = Path(path)

    def taken(p: Path) -> bool:
        return any(q.exists() for q in (p, *(p.with_suffix(s) for s in also)))

    if overwrite or not taken(path):
        return path
    k = 2
    while taken(candidate := path.with_name(f"{path.stem}-{k}{path.suffix}")):
        k += 1
    return candidate


def check_empty_folder(path: str | os.PathLike[str], overwrite: bool = False, option: str = "--out") -> Path:
    """``path`` if it is new or an empty folder (or ``overwrite``); else a ValueError naming ``option``, so
    that a writer of many files never replaces those of an earlier run unasked."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; give a folder")
    if not overwrite and path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{option} {path} is not empty; give a new folder, or add --overwrite to replace its files")
    return path


def save_safetensors(
    tensors: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` whose failures are OSErrors naming the path (see :func:`write_error`)."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except Exception as err:  # SafetensorError is no OSError
        raise write_error(err, path) from err
