"""The package's one atomic write.

Every file or folder multidiff writes under its final name goes through :func:`replacing`: the writer fills
a temporary path beside the destination (hidden, ``.tmp-`` first, the destination's extension last, since
pillow, soundfile and ffmpeg pick the format from it), which then replaces the destination with
``os.replace``, atomic on POSIX within one file system. A reader sees the old file or the new one, never a
partial one; a writer that fails or is interrupted (Ctrl-C) removes its temporary path and leaves the
destination as it was. When the new content is a folder, what is at the destination is moved aside first
and removed once the new one is in place.

``durable=True`` also fsyncs the new file (every file of a new folder) and the parent folder, so the new
content survives a power cut, not only a killed process: checkpoints and run markers ask for it; caches and
media outputs, which can be written again, do not.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "TMP_PREFIX", "fsync_dir", "fsync_file", "replacing", "temp_path", "write_bytes", "write_error", "write_text",
]  # fmt: skip

TMP_PREFIX = ".tmp-"


def temp_path(path: Path) -> Path:
    """A free hidden name beside ``path`` for its temporary copy: ``.tmp-STEM.HEX.EXT``."""
    return path.parent / f"{TMP_PREFIX}{path.stem}.{uuid.uuid4().hex[:12]}{path.suffix}"


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(err: BaseException, path: str | os.PathLike[str]) -> OSError:
    """An OSError that names ``path`` and the cause, for a failed write whose library said too little
    (safetensors' ``SafetensorError``, libsndfile's "System error."): a full disk is said as such."""
    if isinstance(err, OSError) and err.filename:
        return err
    folder = Path(path).parent
    text = str(err)
    try:
        full = shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        full = False
    if full or "code: 28" in text or "No space left" in text:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    if "code: 13" in text or "Permission denied" in text:
        return OSError(errno.EACCES, "Permission denied", str(path))
    if isinstance(err, OSError) and err.errno:
        return OSError(err.errno, err.strerror or text, str(path))
    return OSError(errno.EIO, f"could not write the file ({text})", str(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    if root.is_dir():
        for folder, _, names in os.walk(root):
            for n in names:
                fsync_file(Path(folder) / n)
            fsync_dir(Path(folder))
    else:
        fsync_file(root)


@contextmanager
def replacing(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the new file (or create and fill the new folder) there.

    On a clean exit the temporary path replaces ``path`` (a new folder moves whatever is at ``path``, a
    folder, a file or a symbolic link, aside and removes it after; a link is removed, not its target); on an exception, KeyboardInterrupt included, the temporary path is removed, ``path`` is
    untouched and the exception goes on. ``durable``: fsync the new content and the parent folder.
    """
    dst = Path(path)
    tmp = temp_path(dst)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(errno.ENOENT, f"the writer left nothing at {tmp.name}", str(dst))
        if durable:
            _fsync_tree(tmp)
        if tmp.is_dir() and (dst.exists() or dst.is_symlink()):  # a folder, a file or a link there
            old = dst.with_name(f"{TMP_PREFIX}{dst.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(dst, old)
            os.replace(tmp, dst)
            _remove(old)  # a link goes, not what it points to
        else:
            os.replace(tmp, dst)
    except OSError as err:
        _remove(tmp)
        if err.filename:
            raise
        raise write_error(err, dst) from err  # e.g. a full disk while writing bytes: say which file
    except BaseException:
        _remove(tmp)
        raise
    if durable:
        fsync_dir(dst.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`replacing`)."""
    with replacing(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`replacing`)."""
    return write_bytes(path, text.encode("utf-8"), durable=durable)
