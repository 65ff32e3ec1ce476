"""Helpers shared by the folder datasets: file selection and labels, skip reports, resizing and cropping.

Labels come from ``root/metadata.csv`` (columns ``path`` and ``label`` and/or ``caption``) or from the
first subfolder below ``root``. Files that cannot be used are collected as ``(path, reason)`` pairs and
reported with :class:`SkippedFileWarning`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import inspect
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from multidiff.io import MediaFileError

__all__ = [
    "LABEL_MODES",
    "MetadataWarning",
    "data_fingerprint",
    "FileEntry",
    "MediaFolder",
    "file_key",
    "load_or_build",
    "SkippedFileWarning",
    "crop_offsets",
    "resize_and_crop",
    "resize_frames",
    "resized_size",
    "select_files",
    "warn_skipped",
]

LABEL_MODES = ("auto", "folders", "metadata", "none")


class MetadataWarning(UserWarning):
    """The metadata of a dataset folder leaves something to say (files it does not list)."""


class SkippedFileWarning(UserWarning):
    """A file of a dataset folder was left out; the message names it and says why."""


def select_files(
    root: Path,
    labels: str,
    extensions: tuple[str, ...],
    skipped: list[tuple[str, str]],
) -> tuple[list[tuple[Path, str]], dict[str, str], dict[str, str]]:
    """The candidate files of a folder with their labels and captions.

    Args:
        root: The dataset folder.
        labels: ``"auto"`` (metadata.csv if present, else subfolder names if every file is in one, else
            none), ``"folders"``, ``"metadata"`` or ``"none"``.
        extensions: Lower-case suffixes to consider (ignored for files listed in metadata.csv).
        skipped: Receives ``(path, reason)`` of files left out here (missing from disk, not in a label
            subfolder, hidden: a name or folder starting with "." that metadata.csv does not list).

    Returns:
        ``(pairs, labels, captions)``: ``(path, path relative to root)`` sorted by path (metadata order for
        metadata.csv), and label and caption by relative path.

    Raises:
        ValueError: If ``labels="metadata"`` without metadata.csv, or metadata.csv lacks its columns.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    metadata = root / "metadata.csv"
    if not metadata.is_file() and (root / "metadata.jsonl").is_file():
        metadata = root / "metadata.jsonl"
    mode = labels
    if mode == "metadata" and not metadata.is_file():
        raise ValueError(f"labels='metadata' but {metadata} (or metadata.jsonl) does not exist")
    if mode == "auto" and metadata.is_file():
        mode = "metadata"
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and not _in_run_folder(p, root)
    )
    # hidden files and folders (".tmp-..." leftovers of a killed write, macOS "._x.wav", ".ipynb_checkpoints")
    # are not data unless metadata.csv lists them
    hidden = [p for p in files if is_hidden(p, root)]
    if hidden:
        files = sorted(set(files) - set(hidden))
    if mode == "metadata":
        pairs, found, captions = read_metadata(root, metadata, skipped)
        listed = {rel for _, rel in pairs}
        skipped.extend((str(p), _HIDDEN) for p in hidden if p.relative_to(root).as_posix() not in listed)
        known = listed | {Path(p).resolve().as_posix() for p, _ in skipped}
        unlisted = [
            (p, p.relative_to(root).as_posix())
            for p in files
            if p.relative_to(root).as_posix() not in known and p.resolve().as_posix() not in known
        ]
        if unlisted:  # present but not listed: used, without a label or caption, and said so
            names = ", ".join(rel for _, rel in unlisted[:5]) + (", ..." if len(unlisted) > 5 else "")
            warnings.warn(
                f"{len(unlisted)} file(s) in {root} are not listed in {metadata.name} ({names}): they are used "
                "without a label or caption (a run that needs labels or captions refuses them)",
                MetadataWarning,
                stacklevel=3,
            )
        return pairs + unlisted, found, captions
    skipped.extend((str(p), _HIDDEN) for p in hidden)
    pairs = [(p, p.relative_to(root).as_posix()) for p in files]
    if mode == "auto":
        mode = "folders" if pairs and all("/" in rel for _, rel in pairs) else "none"
    found: dict[str, str] = {}
    if mode == "folders":
        kept = []
        for p, rel in pairs:
            if "/" in rel:
                found[rel] = rel.split("/", 1)[0]
                kept.append((p, rel))
            else:
                skipped.append((str(p), "not inside a label subfolder"))
        pairs = kept
    return pairs, found, {}


_HIDDEN = "hidden (its name or a folder's starts with '.')"  # the reason skipped.txt gives


def is_hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` (inside ``root``) is hidden there: its name or a folder's below ``root`` starts with
    ``"."`` (a killed write's ``.tmp-*`` file, macOS ``._*``, ``.ipynb_checkpoints``). Hidden files are not
    data unless metadata.csv lists them; a hidden folder above ``root`` does not count."""
    return any(part.startswith(".") for part in Path(path).relative_to(root).parts)


def _in_run_folder(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in a multidiff run folder below ``root`` (one with a ``log.jsonl``, a ``latest``
    pointer or a ``lock``): a run's previews inside its own data folder are never training data."""
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            return False
        if any((parent / name).is_file() for name in ("log.jsonl", "latest", "lock")):
            return True
    return False


def data_fingerprint(entries: Any) -> str:
    """What identifies a data set's content for resume: a hash of every used file's relative path, size and
    modification time (so an added, removed, renamed or replaced file changes it, whatever the count)."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.rel):
        st = Path(e.path).stat()
        h.update(f"{e.rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def read_metadata(
    root: Path, metadata: Path, skipped: list[tuple[str, str]]
) -> tuple[list[tuple[Path, str]], dict[str, str], dict[str, str]]:
    """Files, labels and captions listed in ``metadata.csv`` or ``metadata.jsonl``, read strictly.

    Columns: ``path`` (or ``file_name``, the convention of the common audio and image folder datasets) and
    ``label`` and/or ``caption``. A UTF-8 byte-order mark (as spreadsheet programs write it) is accepted.
    Refused with a ValueError naming the file and line: undecodable bytes, a row whose field count differs
    from the header's, a quoted field that runs over lines (an unclosed quote would otherwise swallow the
    rows after it), a path outside the folder, a listed file twice. A listed file that is missing is
    skipped (``skipped`` says so).
    """
    rows = _metadata_rows(metadata)
    pairs: list[tuple[Path, str]] = []
    labels: dict[str, str] = {}
    captions: dict[str, str] = {}
    seen: dict[str, int] = {}
    top = root.resolve()
    for line, row in rows:
        raw = row["path"]
        if not raw:
            raise ValueError(f"{metadata}, line {line}: empty path")
        path = (root / raw) if not Path(raw).is_absolute() else Path(raw)
        try:
            rel = path.resolve().relative_to(top).as_posix()
        except ValueError:
            raise ValueError(
                f"{metadata}, line {line}: {raw!r} is outside the data folder {root}; list files inside it"
            ) from None
        if rel in seen:
            raise ValueError(f"{metadata}, line {line}: {raw!r} is listed again (first on line {seen[rel]})")
        seen[rel] = line
        path = root / rel
        if not path.is_file():
            skipped.append((str(path), f"listed in {metadata.name} but not found"))
            continue
        pairs.append((path, rel))
        label, caption = row.get("label"), row.get("caption")
        if metadata.suffix != ".jsonl" and _json_container(label):  # several labels, where a file has one
            label = json.loads(label)
        if isinstance(label, (bool, list, dict)) or isinstance(caption, (bool, int, float, list, dict)):
            bad = "label" if isinstance(label, (bool, list, dict)) else "caption"
            raise ValueError(
                f"{metadata}, line {line}: the {bad} {row[bad]!r} is not {'a name or number' if bad == 'label' else 'text'}"
            )
        if label not in (None, ""):
            labels[rel] = str(label)
        if caption is not None:
            captions[rel] = str(caption)
    _check_label_spelling(metadata, labels)
    return pairs, labels, captions


def _json_container(text: Any) -> bool:
    """Whether a csv cell holds a JSON list or object (``"[1, 2]"``; ``"[laughter]"`` is a name)."""
    if not isinstance(text, str) or text.strip()[:1] not in ("[", "{"):
        return False
    try:
        return isinstance(json.loads(text), (list, dict))
    except json.JSONDecodeError:
        return False


def _check_label_spelling(metadata: Path, labels: dict[str, str]) -> None:
    """Refuse two labels that differ only in case or surrounding spaces (``"low"``, ``" low"``, ``"Low"``),
    which would silently become separate classes."""
    seen: dict[str, str] = {}
    for name in sorted(set(labels.values())):
        key = name.strip().casefold()
        if key in seen:
            raise ValueError(
                f"{metadata}: the labels {seen[key]!r} and {name!r} differ only in case or spaces and would be "
                "two classes; write each class one way"
            )
        seen[key] = name


def _metadata_rows(metadata: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of a metadata.csv / metadata.jsonl with the path under ``"path"``."""
    try:
        text = metadata.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = metadata.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{metadata}, line {line}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if metadata.suffix == ".jsonl":
        for line, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{metadata}, line {line}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{metadata}, line {line}: not a JSON object")
            rows.append((line, row))
        columns = set().union(*(r.keys() for _, r in rows)) if rows else set()
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        start = 0
        try:
            header = next(reader, [])
            columns = set(header)
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise ValueError(f"{metadata}, line 1: the header names {', '.join(map(repr, twice))} twice")
            start = reader.line_num
            for fields in reader:
                line = start + 1
                if reader.line_num != line:
                    raise ValueError(
                        f"{metadata}, line {line}: a quoted field runs over lines {line}-{reader.line_num} "
                        "(an unclosed quote?)"
                    )
                start = reader.line_num
                if not fields:
                    continue
                if len(fields) > len(header):  # fewer: the trailing cells are empty (absent)
                    raise ValueError(
                        f"{metadata}, line {line}: {len(fields)} fields, the header has {len(header)} ({header})"
                    )
                rows.append((line, dict(zip(header, fields))))
        except csv.Error as err:
            hint = " (a quoted field opened there is never closed)" if "end of data" in str(err) else ""
            raise ValueError(f"{metadata}, line {start + 1}: {err}{hint}") from None
    key = "path" if "path" in columns else "file_name" if "file_name" in columns else None
    if key is None or not ({"label", "caption"} & columns):
        raise ValueError(
            f"{metadata} needs a 'path' (or 'file_name') column and a 'label' and/or 'caption' column, "
            f"found {sorted(columns)}"
        )
    return [(line, {**row, "path": str(row.get(key) or "")}) for line, row in rows]


def warn_skipped(
    kind: str,
    root: Path,
    skipped: list[tuple[str, str]],
    n_files: int,
    max_warnings: int,
    stacklevel: int = 3,
) -> None:
    """One :class:`SkippedFileWarning` per skipped file (the first ``max_warnings``) and a summary."""
    for path, reason in skipped[:max_warnings]:
        warnings.warn(f"skipping {path}: {reason}", SkippedFileWarning, stacklevel=stacklevel + 1)
    if skipped:
        warnings.warn(
            f"{kind} folder {root}: skipped {len(skipped)} of {n_files} files "
            "(a training run lists every path and reason in RUN/skipped.txt)",
            SkippedFileWarning,
            stacklevel=stacklevel + 1,
        )


# --------------------------------------------------------------------------------------------- geometry


def resized_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The size ``(H', W')`` a frame of ``height x width`` is scaled to before cropping to ``size``.

    The smallest uniform scale that covers ``size`` (aspect ratio kept), so the crop loses as little as
    possible; frames already of the target size are kept as they are.
    """
    th, tw = size
    if (height, width) == (th, tw):
        return th, tw
    scale = max(th / height, tw / width)
    return max(th, math.ceil(height * scale - 1e-6)), max(tw, math.ceil(width * scale - 1e-6))


def crop_offsets(
    height: int, width: int, size: tuple[int, int], rng: np.random.Generator | None
) -> tuple[int, int]:
    """Top-left corner of a ``size`` crop from a resized ``height x width`` frame: centred, or drawn with ``rng``."""
    th, tw = size
    dh, dw = height - th, width - tw
    if rng is None:
        return dh // 2, dw // 2
    return int(rng.integers(0, dh + 1)), int(rng.integers(0, dw + 1))


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scale uint8 frames ``[F, H, W, C]`` to exactly ``size`` (bilinear, antialiased, rounded back to
    uint8); frames already of that size pass unchanged."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()  # (F, C, H, W)
    x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (F, H', W', C)


def resize_and_crop(
    frames: torch.Tensor, size: tuple[int, int], offsets: tuple[int, int] | None = None
) -> torch.Tensor:
    """Scale uint8 frames ``[F, H, W, C]`` to cover ``size`` and crop ``[F, size[0], size[1], C]``.

    Resizing is bilinear with antialiasing (for downscaling), rounded back to uint8; frames already of the
    target size pass unchanged.

    Args:
        frames: uint8 frames.
        size: ``(height, width)`` of the output.
        offsets: Crop corner in the resized frame (default: centred; see :func:`crop_offsets`).
    """
    if frames.ndim != 4:
        raise ValueError(f"expected frames [F, H, W, C], got shape {tuple(frames.shape)}")
    _, h, w, _ = frames.shape
    rh, rw = resized_size(h, w, size)
    frames = resize_frames(frames, (rh, rw))  # (F, H', W', C)
    oy, ox = crop_offsets(rh, rw, size, None) if offsets is None else offsets
    th, tw = size
    if not (0 <= oy <= rh - th and 0 <= ox <= rw - tw):
        raise ValueError(f"crop offsets {(oy, ox)} do not fit a {th}x{tw} crop in {rh}x{rw}")
    return frames[:, oy : oy + th, ox : ox + tw].contiguous()


# --------------------------------------------------------------------------------------------- base class


@dataclass(frozen=True)
class FileEntry:
    """A usable file of a folder dataset.

    Attributes:
        path: Absolute (or root-joined) path.
        rel: Path relative to the root, with forward slashes.
        info: What the dataset's probe found (frame count, size, ...).
        label: Class name, if labelled.
        caption: Caption text, if the metadata has one.
    """

    path: Path
    rel: str
    info: Any
    label: str | None
    caption: str | None


class MediaFolder(Dataset):
    """Base of the image and video folder datasets: scanning, skipping, labels, epochs and the latent cache.

    A subclass sets ``kind`` (used in messages), implements ``_probe(path) -> info`` (raising a
    :class:`~multidiff.io.MediaFileError` for a file that cannot be used) and ``get(index, epoch)``.
    """

    kind = "media"

    def _scan(
        self,
        root: str | os.PathLike[str],
        labels: str,
        extensions: tuple[str, ...],
        max_warnings: int,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.kind} folder {self.root} does not exist or is not a folder")
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        candidates, found_labels, captions = select_files(self.root, labels, extensions, self.skipped)
        n_files = len(candidates) + len(self.skipped)
        entries = []
        for path, rel in candidates:
            try:
                info = self._probe(path)
            except MediaFileError as err:
                self.skipped.append((str(path), err.reason))
                continue
            entries.append(FileEntry(path, rel, info, found_labels.get(rel), captions.get(rel)))
        self.entries: list[FileEntry] = entries
        warn_skipped(self.kind, self.root, self.skipped, n_files, max_warnings)
        if not entries:
            raise ValueError(
                f"{self.kind} folder {self.root} has no usable {self.kind} file "
                f"({len(candidates)} candidates with extensions {list(extensions)}, {len(self.skipped)} skipped)"
            )
        self.classes: list[str] = sorted({e.label for e in entries if e.label is not None})
        self._class_index = {name: i for i, name in enumerate(self.classes)}

    def _probe(self, path: Path) -> Any:
        raise NotImplementedError

    def get(self, index: int, epoch: int = 0) -> dict[str, Any]:
        """Item ``index`` as drawn in ``epoch`` (deterministic)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the random choices of an epoch (call before iterating, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, self.epoch)

    def _check_index(self, index: int) -> FileEntry:
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {len(self.entries)} files")
        return self.entries[index]

    def _rng(self, seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
        """The generator of one random choice (``stream``) of item ``index`` in ``epoch``."""
        return np.random.default_rng([seed, epoch, index, stream])

    # ----------------------------------------------------------------------------------- latent cache
    # A subclass with a latent cache has ``adapter``, ``cache_dir`` and ``cache_path(index)``, and defines
    # ``_cache_pixels(index)`` (the adapter's input) and ``_cached_form(raw)`` (how encodings are stored).
    unit = "file"

    def _cache_pixels(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def _cached_form(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _cache_adapter(self, what: str) -> Any:
        if getattr(self, "adapter", None) is None or getattr(self, "cache_dir", None) is None:
            raise ValueError(f"{what} needs an adapter and a cache_dir")
        return self.adapter

    def _cached_latents(
        self, index: int, encoded: Callable[[], torch.Tensor], fingerprint: str
    ) -> torch.Tensor:
        """The cached latents of file ``index``, stored from ``encoded()`` (the adapter's raw output) if missing."""
        meta = {"path": self.entries[index].rel, "adapter": fingerprint}
        return load_or_build(self.cache_path(index), lambda: self._cached_form(encoded()), meta)  # type: ignore[attr-defined]

    def raw_latents(self, index: int) -> torch.Tensor:
        """Raw (un-normalised) latents of file ``index``: read from the cache, or encoded (with the adapter, on
        its device) and cached."""
        adapter = self._cache_adapter("raw_latents")
        self._check_index(index)
        return self._cached_latents(
            index, lambda: adapter.encode_raw(self._cache_pixels(index)), adapter.fingerprint()
        )

    def build_cache(self, progress: bool = False, workers: int = 0) -> None:
        """Encode every file not cached yet (e.g. once on the accelerator before training; a progress bar
        when asked), the frames of several files per adapter call (:func:`encode_in_batches`).

        ``workers`` > 0 decodes the files in that many loader processes (one CPU thread each) while this
        process encodes; the workers only decode (no CUDA in a forked process), the adapter stays here. On an
        H200 with two runs at once, 3,000 GIF clips took about 170 s decoded here and 39 s with four workers
        (and one VAE call per batch; ``benchmarks/RESULTS.md``, issue 9)."""
        from tqdm.auto import tqdm

        adapter = self._cache_adapter("build_cache")
        todo = [i for i in range(len(self)) if not self.cache_path(i).is_file()]  # type: ignore[attr-defined]
        fingerprint = adapter.fingerprint()
        if workers > 0 and len(todo) > 1:
            from torch.utils.data import DataLoader

            decoded: Iterable[tuple[int, torch.Tensor]] = DataLoader(
                _Decoded(self, todo), batch_size=None, num_workers=min(workers, len(todo)), prefetch_factor=8
            )
        else:
            decoded = ((i, self._cache_pixels(i)) for i in todo)
        encode = adapter.encode_raw
        if "chunk_size" in inspect.signature(encode).parameters:  # one adapter call per batch, not per chunk
            encode = functools.partial(encode, chunk_size=ENCODE_FRAMES)
        with tqdm(total=len(todo), desc="latent cache", unit=self.unit, disable=not progress) as bar:
            for i, raw in encode_in_batches(decoded, encode, ENCODE_FRAMES):
                self._cached_latents(int(i), lambda raw=raw: raw, fingerprint)
                bar.update()

    def _base_item(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        item: dict[str, Any] = {"index": index, "path": entry.rel}
        if entry.label is not None:
            item["label"] = self._class_index[entry.label]
        if entry.caption is not None:
            item["caption"] = entry.caption
        return item


#: Frames per adapter call while building a latent cache.
ENCODE_FRAMES = 256


class _Decoded(Dataset):
    """``(index, pixels)`` of the listed files of a folder: what :meth:`MediaFolder.build_cache`'s loader
    workers decode."""

    def __init__(self, folder: MediaFolder, indices: list[int]) -> None:
        self.folder, self.indices = folder, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor]:
        i = self.indices[k]
        return i, self.folder._cache_pixels(i)


def file_key(path: Path, rel: str, *settings: Any) -> str:
    """A cache key for a file: its relative path, size and modification time, and the decoding settings."""
    st = path.stat()
    text = "|".join([rel, str(st.st_size), str(st.st_mtime_ns), *map(str, settings)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def encode_in_batches(
    items: Iterable[tuple[int, torch.Tensor]],
    encode: Callable[[torch.Tensor], torch.Tensor],
    max_frames: int = ENCODE_FRAMES,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(index, frames [N, ...])`` pairs -> ``(index, encode(frames))``, the frames of several items encoded in
    one call (up to ``max_frames`` at once; an item is never split). ``encode`` must treat frames independently
    (an image VAE on frames does): one call per batch instead of one per file, so a latent cache is not bound by
    kernel launches and host syncs."""
    pending: list[tuple[int, torch.Tensor]] = []

    def flush() -> Iterator[tuple[int, torch.Tensor]]:
        out = encode(torch.cat([f for _, f in pending])).detach().cpu()  # (sum N, ...)
        for (i, _), part in zip(pending, out.split([f.shape[0] for _, f in pending])):
            yield i, part
        pending.clear()

    count = 0
    for i, frames in items:
        if pending and count + frames.shape[0] > max_frames:
            yield from flush()
            count = 0
        pending.append((i, frames))
        count += frames.shape[0]
    if pending:
        yield from flush()


def load_or_build(
    path: Path, build: Callable[[], torch.Tensor], metadata: dict[str, str], key: str = "latents"
) -> torch.Tensor:
    """The tensor cached at ``path`` (safetensors, under ``key``), built and written atomically if missing."""
    from safetensors.torch import load_file

    from multidiff.atomic import replacing
    from multidiff.io.common import save_safetensors

    if path.is_file():
        return load_file(str(path))[key]
    value = build().detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        save_safetensors({key: value}, tmp, metadata=metadata)
    return value
