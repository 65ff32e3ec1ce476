"""The pipeline folder format, written once: names, the backbone and schedule tables, config and tensor I/O, and
the (de)serialisation of the components a pipeline carries (text encoder, vocoder, VAE).

A pipeline folder holds ``config.json`` (backbone type and config, prediction, schedule, sigma_data, adapter
settings, sampler defaults, label names, window settings) and ``denoiser.safetensors``; an adapter may add
its own weight files (``vocoder.safetensors``, ``vae/``), and a caption model its trainable text encoder
(``text_encoder/``; a transformers encoder is referenced by its local path). Nothing is pickled; classes are
named from fixed tables, never by import path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from multidiff.core.denoiser import PREDICTIONS, Denoiser
from multidiff.core.samplers import get_sampler
from multidiff.core.schedules import ContinuousVPSchedule, EDMSchedule, FlowSchedule, Schedule, VPSchedule
from multidiff.nn.io import config_from_dict, load_matching_state

__all__ = [
    "CONFIG_NAME",
    "folder_kind",
    "GRIDS",
    "SamplingConfig",
    "WEIGHTS_NAME",
    "VOCODER_WEIGHTS_NAME",
    "TEXT_ENCODER_FOLDER",
    "VAE_FOLDER",
    "FORMAT_VERSION",
    "backbones",
    "schedule_to_dict",
    "schedule_from_dict",
    "read_config",
    "save_tensors",
    "text_encoder_to_dict",
    "text_encoder_from_dict",
    "vocoder_to_dict",
    "save_vae",
    "vae_path",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "denoiser.safetensors"
VOCODER_WEIGHTS_NAME = "vocoder.safetensors"
TEXT_ENCODER_FOLDER = "text_encoder"
VAE_FOLDER = "vae"
FORMAT_VERSION = 1
GRIDS: tuple[str, ...] = ("default", "karras", "exponential")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampler defaults stored with a pipeline (each can be overridden per call).

    Attributes:
        sampler: A name from :data:`multidiff.core.samplers.SAMPLERS`.
        steps: Number of sampler steps.
        guidance: Classifier-free guidance scale (1: none).
        grid: ``"default"`` (the schedule's own grid), ``"karras"`` (ρ = ``rho``) or ``"exponential"``,
            both over the schedule's σ range.
        rho: ρ of the Karras grid.
        guidance_interval: Guide only where lo < σ <= hi (Kynkäänniemi et al. 2024); None: everywhere.
        guidance_rescale: Guidance rescale φ (Lin et al. 2023).
        precision: ``"bf16"`` runs the backbone under bf16 autocast on CUDA; ``"fp32"`` does not, unless
            the backbone's weights are themselves bf16 (see :meth:`autocast`).
    """

    sampler: str = "dpmpp_2m"
    steps: int = 32
    guidance: float = 1.0
    grid: str = "default"
    rho: float = 7.0
    guidance_interval: tuple[float, float] | None = None
    guidance_rescale: float = 0.0
    precision: str = "bf16"

    def __post_init__(self) -> None:
        get_sampler(self.sampler)  # raises ValueError naming the known samplers
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"SamplingConfig.steps must be a positive int, got {self.steps!r}")
        if not math.isfinite(self.guidance):
            raise ValueError(f"SamplingConfig.guidance must be finite, got {self.guidance!r}")
        if self.grid not in GRIDS:
            raise ValueError(f"SamplingConfig.grid must be one of {GRIDS}, got {self.grid!r}")
        if self.rho <= 0:
            raise ValueError(f"SamplingConfig.rho must be positive, got {self.rho!r}")
        if self.guidance_interval is not None:
            object.__setattr__(self, "guidance_interval", tuple(float(v) for v in self.guidance_interval))
            lo, hi = self.guidance_interval
            if not 0 <= lo < hi:
                raise ValueError(
                    f"SamplingConfig.guidance_interval needs 0 <= lo < hi, got {self.guidance_interval}"
                )
        if not 0.0 <= self.guidance_rescale <= 1.0:
            raise ValueError(
                f"SamplingConfig.guidance_rescale must lie in [0, 1], got {self.guidance_rescale!r}"
            )
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"SamplingConfig.precision must be 'bf16' or 'fp32', got {self.precision!r}")

    def autocast(self, device: torch.device, weights: torch.dtype) -> contextlib.AbstractContextManager:
        """What the backbone runs under while sampling: bf16 autocast on CUDA for ``precision="bf16"``, and
        on any device once its ``weights`` are bf16 (``Pipeline.to(dtype=torch.bfloat16)``: the inputs then
        have to be cast to match); otherwise nothing."""
        if weights == torch.bfloat16 or (device.type == "cuda" and self.precision == "bf16"):
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def backbones() -> dict[str, type[nn.Module]]:
    """Backbone classes a pipeline folder may name (a fixed table, never an import path)."""
    from multidiff.interop.diffusers import DiffusersBackbone
    from multidiff.nn.dit import DiT
    from multidiff.nn.unet import UNet

    return {"UNet": UNet, "DiT": DiT, "DiffusersBackbone": DiffusersBackbone}


_SCHEDULES: dict[str, type[Schedule]] = {
    "EDMSchedule": EDMSchedule,
    "VPSchedule": VPSchedule,
    "FlowSchedule": FlowSchedule,
    "ContinuousVPSchedule": ContinuousVPSchedule,
}


def _schedules() -> dict[str, type[Schedule]]:
    """:data:`_SCHEDULES` and the schedules of diffusers schedulers that live in :mod:`multidiff.interop`."""
    from multidiff.interop.diffusers import CosineEDMSchedule, SNRShiftedVPSchedule

    return {
        **_SCHEDULES,
        "CosineEDMSchedule": CosineEDMSchedule,
        "SNRShiftedVPSchedule": SNRShiftedVPSchedule,
    }


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    name = type(schedule).__name__
    if name not in _schedules() or not dataclasses.is_dataclass(schedule):
        raise ValueError(f"cannot save a pipeline with schedule {name}; known: {sorted(_schedules())}")
    return {"type": name, **{f.name: getattr(schedule, f.name) for f in dataclasses.fields(schedule)}}


def schedule_from_dict(d: Mapping[str, Any], source: str) -> Schedule:
    d = dict(d)
    name = d.pop("type", None)
    if name not in _schedules():
        raise ValueError(f"{source}: unknown schedule type {name!r}; known: {sorted(_schedules())}")
    return config_from_dict(_schedules()[name], d, source=source)


def denoiser_from_dict(data: Mapping[str, Any], folder: Path, source: str) -> Denoiser:
    """The :class:`~multidiff.core.denoiser.Denoiser` a pipeline folder's config (``backbone``, ``denoiser``)
    describes, with the weights of ``folder / WEIGHTS_NAME`` loaded strictly."""
    bb = data["backbone"]
    table = backbones()
    if bb.get("type") not in table:
        raise ValueError(f"{source}: unknown backbone type {bb.get('type')!r}; known: {sorted(table)}")
    bcls = table[bb["type"]]
    backbone = bcls(config_from_dict(bcls.config_class, bb["config"], source=source))  # type: ignore[attr-defined,call-arg]
    dd = data["denoiser"]
    if dd.get("prediction") not in PREDICTIONS:
        raise ValueError(f"{source}: unknown prediction {dd.get('prediction')!r}; known: {PREDICTIONS}")
    denoiser = Denoiser(
        backbone, dd["prediction"], schedule_from_dict(dd["schedule"], source), float(dd["sigma_data"])
    )
    state = load_matching_state(folder / WEIGHTS_NAME, denoiser.state_dict(), "denoiser")
    denoiser.load_state_dict(state, strict=True)
    return denoiser


def sampling_from_dict(d: Mapping[str, Any], source: str) -> SamplingConfig:
    """The :class:`SamplingConfig` of a pipeline folder's ``sampling`` entry (unknown keys refused)."""
    s = dict(d)
    unknown = sorted(set(s) - {f.name for f in dataclasses.fields(SamplingConfig)})
    if unknown:
        raise ValueError(f"{source}: unknown sampling settings {unknown}")
    if s.get("guidance_interval") is not None:
        s["guidance_interval"] = tuple(s["guidance_interval"])
    return SamplingConfig(**s)


def folder_kind(folder: str | os.PathLike[str]) -> str | None:
    """What a model folder holds, for writers that must not replace another model's ``config.json``:
    ``"diffusers-pipeline"`` (``model_index.json``), ``"multidiff"`` (a pipeline config: a ``backbone``),
    ``"other"`` (another ``config.json``, e.g. a diffusers model), or None (nothing of these)."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return "diffusers-pipeline"
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "other"
    return "multidiff" if isinstance(config, dict) and "backbone" in config else "other"


def read_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such pipeline folder")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{folder}: missing {CONFIG_NAME}; this is not a saved multidiff pipeline")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: could not read the pipeline config ({err})") from err
    for key in ("pipeline", "backbone", "denoiser", "sampling"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{path}: the pipeline config lacks the key {key!r}")
    return data


def save_tensors(path: Path, state: Mapping[str, Tensor]) -> None:
    from multidiff.io.common import save_safetensors

    save_safetensors({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, path, {"format": "pt"})


def text_encoder_to_dict(enc: nn.Module | None) -> dict[str, Any] | None:
    """``{"type": "byte"}`` (weights in ``text_encoder/``), ``{"type": "hf", "path": ...}`` (a local
    transformers folder, referenced, not copied) or None."""
    from multidiff.nn.text import ByteTextEncoder, HFTextEncoder

    if enc is None:
        return None
    if isinstance(enc, ByteTextEncoder):
        return {"type": "byte"}
    if isinstance(enc, HFTextEncoder):
        path = getattr(enc.model, "name_or_path", None) or getattr(enc.model.config, "_name_or_path", "")
        if not path or not Path(path).is_dir():
            raise ValueError(
                f"cannot save a pipeline whose transformers text encoder has no local folder ({path!r})"
            )
        return {"type": "hf", "path": str(Path(path).resolve())}
    raise ValueError(f"cannot save a pipeline with a text encoder of type {type(enc).__name__}")


def text_encoder_from_dict(d: Mapping[str, Any] | None, folder: Path) -> nn.Module | None:
    """Rebuild the text encoder that :meth:`text_encoder_to_dict` describes."""
    from multidiff.nn.text import ByteTextEncoder, load_text_encoder

    if d is None:
        return None
    source = str(folder / CONFIG_NAME)
    if d.get("type") == "byte":
        sub = folder / TEXT_ENCODER_FOLDER
        if not (sub / CONFIG_NAME).is_file():
            raise ValueError(f"{source} names a byte text encoder but {sub} is missing or has no config.json")
        return ByteTextEncoder.from_pretrained(sub)
    if d.get("type") == "hf":
        path = Path(str(d.get("path")))
        if not path.is_dir():
            raise ValueError(f"{source}: the transformers text encoder folder {path} does not exist")
        return load_text_encoder(path)
    raise ValueError(f"{source}: unknown text encoder type {d.get('type')!r}; known: byte, hf")


def vocoder_to_dict(vocoder: nn.Module) -> dict[str, Any]:
    from multidiff.modalities.vocoders import GriffinLim, HiFiGAN

    if isinstance(vocoder, GriffinLim):
        return {
            "type": "griffinlim",
            "n_iter": vocoder.n_iter,
            "momentum": vocoder.momentum,
            "nnls_iter": vocoder.nnls_iter,
        }
    if isinstance(vocoder, HiFiGAN):
        return {"type": "hifigan", "config": vocoder.config.to_dict(), "spec": vocoder.spec.to_dict()}
    raise ValueError(
        f"cannot save a pipeline with vocoder {type(vocoder).__name__}; use GriffinLim or HiFiGAN"
    )


def save_vae(image_adapter: nn.Module, folder: Path) -> None:
    """Copy the adapter's VAE (if any) into ``folder/vae`` so the pipeline folder stands alone."""
    vae = getattr(image_adapter, "vae", None)
    if vae is not None:
        vae.save_pretrained(str(folder / VAE_FOLDER), safe_serialization=True)


def vae_path(d: Mapping[str, Any], folder: Path) -> Path | None:
    """The VAE saved beside the config when the adapter is in VAE space (else the recorded path is used)."""
    if d.get("space") == "vae" and (folder / VAE_FOLDER).is_dir():
        return folder / VAE_FOLDER
    return None
