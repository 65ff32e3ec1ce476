"""Pretrained model families of the ecosystem, loaded from a local diffusers-format folder.

:func:`load_family` reads ``model_index.json``, finds the family by its pipeline class and builds a
multidiff :class:`~multidiff.pipeline.Pipeline` with that family's real adapter, schedule and conditioning.
Nothing is downloaded: the caller gives the folder. Each family module imports diffusers / transformers
inside its functions.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "family_of", "load_family"]

# diffusers pipeline class name -> "module:function" building a multidiff Pipeline from the folder
FAMILIES: dict[str, str] = {
    "AudioLDMPipeline": "multidiff.families.audioldm:load_audioldm",
    "AudioLDM2Pipeline": "multidiff.families.audioldm:load_audioldm2",
    "StableAudioPipeline": "multidiff.families.stable_audio:load_stable_audio",
    "StableVideoDiffusionPipeline": "multidiff.families.svd:load_svd",
    "AnimateDiffPipeline": "multidiff.families.animatediff:load_animatediff",
    "LTXPipeline": "multidiff.families.ltx:load_ltx",
}


def family_of(folder: str | os.PathLike[str]) -> str:
    """The diffusers pipeline class named by ``folder/model_index.json``.

    Raises:
        ValueError: the folder has no readable ``model_index.json`` or names an unsupported pipeline.
    """
    index = Path(folder) / "model_index.json"
    try:
        data: dict[str, Any] = json.loads(index.read_text())
    except FileNotFoundError:
        raise ValueError(f"{index} not found: give the folder of a diffusers pipeline") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{index} cannot be read ({e})") from None
    name = str(data.get("_class_name", ""))
    if name not in FAMILIES:
        raise ValueError(
            f"{index}: pipeline {name or '(unnamed)'} is not a supported family; supported: {', '.join(FAMILIES)}"
        )
    return name


def load_family(folder: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load the diffusers pipeline folder ``folder`` as a multidiff Pipeline (see :data:`FAMILIES`)."""
    module, func = FAMILIES[family_of(folder)].split(":")
    return getattr(importlib.import_module(module), func)(Path(folder), **kwargs)
