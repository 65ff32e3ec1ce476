"""Saving and loading backbones as a folder: ``config.json`` + ``model.safetensors``.

A model that uses these helpers exposes ``.config`` (a frozen dataclass) and sets the class attribute
``config_class``; its constructor takes that config. ``config.json`` holds the dataclass fields and the
model's kind (the class name, used only to refuse a folder written by another model, never to build
one). Weights go through ``safetensors.torch``; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "config_from_dict",
    "config_to_dict",
    "load_matching_state",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="PretrainedMixin")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen dataclass as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ValueError(f"expected a dataclass instance as config, got {type(config).__name__}")
    return dataclasses.asdict(config)


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


def config_from_dict(config_class: type, data: dict[str, Any], *, source: str = "<dict>") -> Any:
    """Rebuild a config dataclass from ``data``; lists become tuples; unknown keys raise ValueError."""
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown {config_class.__name__} fields {unknown}")
    return config_class(**{key: _to_tuple(value) for key, value in data.items()})


def load_matching_state(path: str | os.PathLike[str], expected: dict[str, torch.Tensor], what: str) -> dict:
    """Read a safetensors file and check it holds exactly the keys and shapes of ``expected``.

    Args:
        path: the ``.safetensors`` file.
        expected: a state dict of the model the weights are for (e.g. ``model.state_dict()``).
        what: what the weights are, for the error message ("model", "denoiser", "vocoder", ...).

    Raises:
        ValueError: the file is missing or unreadable, or keys or shapes differ (all named, up to 10 each).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path.parent}: missing {path.name} (the {what} weights)")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001 - any safetensors failure gets the file name
        raise ValueError(f"{path}: could not read the {what} weights ({err})") from err
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", wrong),
    ):
        if items:
            parts.append(f"{label} {items[:10]}{' ...' if len(items) > 10 else ''}")
    if parts:
        raise ValueError(f"{path}: the {what} weights do not match {CONFIG_NAME}: " + "; ".join(parts))
    return state


class PretrainedMixin:
    """Adds ``save_pretrained`` / ``from_pretrained`` to an ``nn.Module`` with a dataclass ``config``."""

    config_class: type
    config: Any

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if missing)."""
        from multidiff.io.common import save_safetensors

        if not isinstance(self, nn.Module):
            raise TypeError(f"{type(self).__name__} is not an nn.Module")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        payload = {"model": type(self).__name__, "config": config_to_dict(self.config)}
        (path / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_safetensors(state, path / WEIGHTS_NAME, metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls: type[M],
        directory: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        config: Any | None = None,
    ) -> M:
        """Build the model from ``directory``/config.json and load ``model.safetensors``.

        Args:
            directory: Folder written by :meth:`save_pretrained`.
            device: Where to put the weights (default CPU).
            config: Use this config instead of the one in ``config.json`` (it must fit the weights).

        Raises:
            ValueError: The folder lacks a file, was written by another model class, or the weights
                do not match the config (the message names the folder and the keys or shapes).
        """
        path = Path(directory)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in (cfg_file, w_file):
            if not f.is_file():
                raise ValueError(f"{path}: missing {f.name}")
        if config is None:
            payload = json.loads(cfg_file.read_text())
            if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
                raise ValueError(f"{cfg_file}: expected keys 'model' and 'config'")
            if payload["model"] != cls.__name__:
                raise ValueError(f"{cfg_file} describes a {payload['model']!r} model, not {cls.__name__!r}")
            config = config_from_dict(cls.config_class, payload["config"], source=str(cfg_file))
        model = cls(config)  # type: ignore[call-arg]
        if not isinstance(model, nn.Module):
            raise TypeError(f"{cls.__name__} is not an nn.Module")
        state = load_matching_state(w_file, model.state_dict(), "model")
        model.load_state_dict(state, strict=True)
        if device is not None:
            model.to(device)
        return model
