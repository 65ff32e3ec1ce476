"""Pipelines bundled with the package: each ``multidiff/models/<name>/`` is an ordinary pipeline folder
(``config.json`` + ``*.safetensors``), usable by name wherever a pipeline folder is taken.

    multidiff models                                   # lists them
    multidiff generate audio --model NAME --out DIR    # instead of --ckpt RUN
    multidiff ui --model NAME

:func:`resolve` maps a name to its folder; :func:`resolve_source` takes either a name or a path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MODELS_DIR",
    "ModelInfo",
    "available",
    "describe",
    "resolve",
    "resolve_source",
    "save_half",
]

#: Where bundled pipeline folders live (this package's folder).
MODELS_DIR = Path(__file__).resolve().parent


def available(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the bundled pipelines (sub-folders of ``root``, default :data:`MODELS_DIR`, that hold a
    ``config.json``), sorted."""
    base = Path(root) if root is not None else MODELS_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "config.json").is_file())


def resolve(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the bundled pipeline ``name``.

    Args:
        name: A name :func:`available` lists.
        root: Where to look (default :data:`MODELS_DIR`).

    Raises:
        ValueError: For an unknown name (the message lists the bundled ones, or says there are none).
    """
    base = Path(root) if root is not None else MODELS_DIR
    names = available(base)
    if name not in names:
        have = f"bundled: {', '.join(names)}" if names else "this install bundles no models"
        raise ValueError(f"no bundled model {name!r} in {base} ({have}; 'multidiff models' lists them)")
    return base / name


def resolve_source(ckpt: str | None, model: str | None) -> str:
    """The pipeline source of a command: ``--ckpt`` (a path) or ``--model`` (a bundled name), exactly one.

    Raises:
        ValueError: When both or neither are given, or the name is unknown.
    """
    if ckpt and model:
        raise ValueError("use either --ckpt or --model, not both")
    if model:
        return str(resolve(model))
    if not ckpt:
        raise ValueError(
            "pass --ckpt RUN (a run, checkpoint or pipeline folder) or --model NAME (multidiff models)"
        )
    return ckpt


@dataclass(frozen=True)
class ModelInfo:
    """What a pipeline folder's ``config.json`` says, read without loading weights."""

    name: str
    path: Path
    modality: str
    labels: list[str] | None
    captions: bool
    summary: str


_MODALITY = {"AudioPipeline": "audio", "VideoPipeline": "video", "ImagePipeline": "image"}


def describe(folder: str | os.PathLike[str], name: str | None = None) -> ModelInfo:
    """Read a pipeline folder's ``config.json``: its modality, labels, whether it takes captions, and a one-line
    summary (sample rate or frame size, training length, backbone, parameters stored).

    Raises:
        ValueError: If the folder has no readable ``config.json``.
    """
    path = Path(folder)
    try:
        data: dict[str, Any] = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path / 'config.json'}: not a readable pipeline config ({err})") from None
    modality = _MODALITY.get(str(data.get("pipeline")), str(data.get("pipeline")))
    adapter = data.get("adapter") or {}
    window = (data.get("window") or {}).get("length")
    parts = [modality]
    spec = adapter.get("spec") if isinstance(adapter, dict) else None
    if isinstance(spec, dict) and "sample_rate" in spec:
        parts.append(f"{spec['sample_rate']} Hz")
        if window and spec.get("hop_length"):
            parts.append(f"{window * spec['hop_length'] / spec['sample_rate']:.1f} s clips")
    size = data.get("size")
    if size:
        parts.append(f"{size[0]}x{size[1]} px")
        if modality == "video" and window:
            parts.append(f"{window} frames")
    parts.append(str((data.get("backbone") or {}).get("type", "?")))
    labels = data.get("labels")
    if labels:
        shown = ", ".join(labels[:6]) + (", ..." if len(labels) > 6 else "")
        parts.append(f"labels: {shown}")
    captions = data.get("text_encoder") is not None
    if captions:
        parts.append("captions")
    return ModelInfo(name or path.name, path, modality, labels, captions, "; ".join(parts))


def save_half(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Write the pipeline folder ``source`` to ``destination`` with the denoiser's parameters in float16
    (buffers, such as frequency tables, stay float32): how the bundled models are made, at half the size.
    Loading casts them back to float32. ``destination`` must not exist yet.

    Raises:
        ValueError: If ``destination`` exists, or ``source`` is not a loadable pipeline folder.
    """
    from multidiff.atomic import replacing
    from multidiff.pipeline import load_pipeline

    dst = Path(destination)
    if dst.exists():
        raise ValueError(f"{dst} exists; give a new folder")
    pipe = load_pipeline(source)
    params = {name for name, _ in pipe.denoiser.named_parameters()}
    state = {
        k: v.half() if k in params and v.is_floating_point() else v
        for k, v in pipe.denoiser.state_dict().items()
    }
    with replacing(dst) as tmp:  # renamed into place once complete
        pipe.save_pretrained(tmp, state_dict=state)
    return dst
