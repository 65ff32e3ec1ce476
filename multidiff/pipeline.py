"""Pipelines: an adapter, a :class:`~multidiff.core.denoiser.Denoiser` and sampling settings -> ``generate()``.

Sampling (DESIGN.md, "Data flow"): seeded noise · σ_max -> sampler(guided denoiser, σ grid) -> latents ->
adapter.decode -> media. The denoiser the sampler sees is built by composition, innermost first:

1. the model ``D(x, σ, **cond)``;
2. :class:`WindowedDenoiser` when the requested length exceeds the training length: overlapping windows
   along the time axis, their x0 predictions averaged (MultiDiffusion, Bar-Tal et al. 2023, Eq. 5);
3. classifier-free guidance with the null label (:func:`multidiff.core.guidance.cfg`);
4. static thresholding of x0 to the training latents' range, when known (:class:`StaticThreshold`);
5. inpainting / continuation with known latents under a mask (:func:`multidiff.core.guidance.inpaint`).

Sample k of a call is drawn from its own generator seeded ``seed + k``, so it does not depend on the batch
size. SDEdit (Meng et al. 2022) starts from the known input noised to the σ at which the fraction
``strength`` of the grid remains.

A pipeline folder holds ``config.json`` (backbone type and config, prediction, schedule, sigma_data,
adapter settings, sampler defaults, label names, window settings) and ``denoiser.safetensors``; an
adapter may add its own weight files (e.g. ``vocoder.safetensors``), and a caption model its trainable text
encoder (``text_encoder/``; a transformers encoder is referenced by its local path). Nothing is pickled.
A prompt reaches the backbone as cross-attention ``context``, guided against the null caption.

:class:`Pipeline` works on latents and subclasses add a modality (:class:`AudioPipeline`,
:class:`VideoPipeline`, :class:`ImagePipeline`), overriding only the adapter (de)serialisation and the shape
logic. A video model trained with frame-mask conditioning (:mod:`multidiff.train.masks`) also receives the
known frames and their mask as extra input channels (:func:`frame_cond_channels`); an adapter's VAE is saved
into the pipeline folder (``vae/``) so the folder stands alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multidiff.core.denoiser import PREDICTIONS, Denoiser
from multidiff.core.guidance import cfg, inpaint
from multidiff.core.samplers import get_sampler, noise_like
from multidiff.core.schedules import EDMSchedule, FlowSchedule, Schedule, VPSchedule, exponential, karras
from multidiff.nn.io import config_from_dict, load_matching_state

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "GRIDS",
    "SamplingConfig",
    "StaticThreshold",
    "WindowedDenoiser",
    "window_starts",
    "Pipeline",
    "AudioPipeline",
    "VideoPipeline",
    "ImagePipeline",
    "frame_cond_channels",
    "load_pipeline",
    "mel_frame_mask",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "denoiser.safetensors"
VOCODER_WEIGHTS_NAME = "vocoder.safetensors"
TEXT_ENCODER_FOLDER = "text_encoder"
FORMAT_VERSION = 1
GRIDS: tuple[str, ...] = ("default", "karras", "exponential")

P = TypeVar("P", bound="Pipeline")


# ---------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------


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
        precision: ``"bf16"`` runs the backbone under bf16 autocast on CUDA; ``"fp32"`` never does.
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


def _backbones() -> dict[str, type[nn.Module]]:
    """Backbone classes a pipeline folder may name (a fixed table, never an import path)."""
    from multidiff.nn.dit import DiT
    from multidiff.nn.unet import UNet

    return {"UNet": UNet, "DiT": DiT}


_SCHEDULES: dict[str, type[Schedule]] = {
    "EDMSchedule": EDMSchedule,
    "VPSchedule": VPSchedule,
    "FlowSchedule": FlowSchedule,
}


def _schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    name = type(schedule).__name__
    if name not in _SCHEDULES or not dataclasses.is_dataclass(schedule):
        raise ValueError(f"cannot save a pipeline with schedule {name}; known: {sorted(_SCHEDULES)}")
    return {"type": name, **{f.name: getattr(schedule, f.name) for f in dataclasses.fields(schedule)}}


def _schedule_from_dict(d: Mapping[str, Any], source: str) -> Schedule:
    d = dict(d)
    name = d.pop("type", None)
    if name not in _SCHEDULES:
        raise ValueError(f"{source}: unknown schedule type {name!r}; known: {sorted(_SCHEDULES)}")
    return config_from_dict(_SCHEDULES[name], d, source=source)


# ---------------------------------------------------------------------------------------------------
# MultiDiffusion windows
# ---------------------------------------------------------------------------------------------------


def window_starts(total: int, length: int, overlap: int) -> list[int]:
    """Start indices of windows of ``length`` covering ``total`` positions, neighbours sharing ``overlap``.

    The stride is ``length - overlap``; the last window is aligned to the end. One window when
    ``total <= length``.
    """
    if length < 1 or not 0 <= overlap < length:
        raise ValueError(
            f"need length >= 1 and 0 <= overlap < length, got length={length}, overlap={overlap}"
        )
    if total <= length:
        return [0]
    stride = length - overlap
    starts = list(range(0, total - length, stride))
    starts.append(total - length)
    return starts


@dataclass(frozen=True, eq=False)
class WindowedDenoiser:
    """A denoiser for inputs longer than the model was trained on, by overlapping windows.

    MultiDiffusion (Bar-Tal et al. 2023, "MultiDiffusion: Fusing Diffusion Paths for Controlled Image
    Generation", Eq. 5): every window of ``length`` positions along ``axis`` is denoised on its own, and
    each position's x0 prediction is the average over the windows that contain it (the least-squares
    reconciliation of the per-window predictions). Conditioning tensors laid out like x (same number of
    dims and the full length on ``axis``, e.g. ``cond_channels``) are cut into the same windows; tensors
    with a leading batch axis are repeated; everything else is passed unchanged.

    Attributes:
        denoiser: ``D(x, sigma, **cond) -> x0_hat``.
        length: Window length along ``axis`` (the training length).
        overlap: Positions shared by neighbouring windows.
        axis: The time axis of x (negative counts from the end).
        windows_per_call: Windows evaluated together in one batched call.
    """

    denoiser: Callable[..., Tensor]
    length: int
    overlap: int
    axis: int = -1
    windows_per_call: int = 8

    def __post_init__(self) -> None:
        window_starts(self.length, self.length, self.overlap)  # validates length and overlap
        if self.windows_per_call < 1:
            raise ValueError(f"windows_per_call must be >= 1, got {self.windows_per_call}")

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        axis = self.axis % x.ndim
        total = x.shape[axis]
        if total <= self.length:
            return self.denoiser(x, sigma, **cond)
        starts = window_starts(total, self.length, self.overlap)
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        sigma = sigma.expand(b) if sigma.ndim == 0 else sigma
        acc = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
        count = torch.zeros(total, device=x.device, dtype=torch.float32)
        for g in range(0, len(starts), self.windows_per_call):
            group = starts[g : g + self.windows_per_call]
            k = len(group)
            xs = torch.cat([x.narrow(axis, s, self.length) for s in group])  # (k·B, ..., L, ...)
            cs = {key: self._cut(v, x, axis, group, b) for key, v in cond.items()}
            out = self.denoiser(xs, sigma.repeat(k), **cs).float()  # (k·B, ..., L, ...)
            for j, s in enumerate(group):
                acc.narrow(axis, s, self.length).add_(out[j * b : (j + 1) * b])
                count[s : s + self.length] += 1
        shape = [1] * x.ndim
        shape[axis] = total
        return (acc / count.reshape(shape)).to(x.dtype)

    def _cut(self, value: Any, x: Tensor, axis: int, group: list[int], b: int) -> Any:
        if not isinstance(value, Tensor) or value.ndim == 0:
            return value
        if value.ndim == x.ndim and value.shape[axis] == x.shape[axis]:
            return torch.cat([value.narrow(axis, s, self.length) for s in group])
        if value.shape[0] == b:
            return value.repeat(len(group), *([1] * (value.ndim - 1)))
        return value


@dataclass(frozen=True, eq=False)
class StaticThreshold:
    """A denoiser whose x0 prediction is clamped to a fixed range (static thresholding, Saharia et al. 2022,
    "Photorealistic Text-to-Image Diffusion Models with Deep Language Understanding", Imagen, Sec. 2.3).

    With the range of the training latents (per channel or per mel bin), a guided or under-trained model
    cannot predict values the data never had; for log-mel latents this keeps ``exp`` in the vocoder from
    turning an overshoot into a loud click.

    Attributes:
        denoiser: ``D(x, sigma, **cond) -> x0_hat``.
        lo: Lower bound, broadcastable to one sample's latent shape (e.g. ``[C, M, 1]``).
        hi: Upper bound, likewise.
    """

    denoiser: Callable[..., Tensor]
    lo: Tensor
    hi: Tensor

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        out = self.denoiser(x, sigma, **cond)
        lo = self.lo.to(device=out.device, dtype=out.dtype)
        hi = self.hi.to(device=out.device, dtype=out.dtype)
        return torch.maximum(torch.minimum(out, hi), lo)


# ---------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------


def _read_config(folder: Path) -> dict[str, Any]:
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


def _save_tensors(path: Path, state: Mapping[str, Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"}
    )


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


class Pipeline:
    """Generic sampling pipeline over latents: a denoiser, an optional adapter, and sampler defaults.

    Args:
        denoiser: The :class:`~multidiff.core.denoiser.Denoiser` (put in eval mode).
        adapter: Turns latents into media (``decode``); None returns latents from :meth:`generate`.
        sampling: Sampler defaults.
        labels: Class names, index i naming label i (None for unconditional models).
        window: Training length along the time axis in latent positions: longer requests are generated
            by overlapping windows of this length (None: never window).
        overlap: Positions shared by neighbouring windows (default ``window // 4``).
        x0_range: ``(lo, hi)`` of the training latents, broadcastable to one sample's latent shape: x0
            predictions are clamped to it while sampling (:class:`StaticThreshold`); None: no clamp.
        text_encoder: Caption encoder for a model trained with cross-attention on captions (a
            :class:`~multidiff.nn.text.ByteTextEncoder` or a :class:`~multidiff.nn.text.HFTextEncoder`);
            its width must equal the backbone's ``context_dim``. None for models without captions.

    Subclasses set :attr:`time_axis` and override :meth:`decode`, :meth:`adapter_to_dict`,
    :meth:`adapter_from_dict` and :meth:`save_adapter_files` for their modality.
    """

    time_axis: ClassVar[int] = -1
    """The latent axis that is time (windows and continuation run along it)."""

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module | None = None,
        *,
        sampling: SamplingConfig | None = None,
        labels: Sequence[str] | None = None,
        window: int | None = None,
        overlap: int | None = None,
        x0_range: tuple[Tensor, Tensor] | None = None,
        text_encoder: nn.Module | None = None,
    ) -> None:
        if not isinstance(denoiser, Denoiser):
            raise ValueError(f"a pipeline needs a multidiff Denoiser, got {type(denoiser).__name__}")
        self.denoiser = denoiser.eval()
        self.adapter = adapter.eval() if adapter is not None else None
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.labels = list(labels) if labels is not None else None
        num_classes = self.num_classes
        if self.labels is not None and num_classes is not None and len(self.labels) != num_classes:
            raise ValueError(f"{len(self.labels)} label names for a backbone with {num_classes} classes")
        if window is not None:
            overlap = window // 4 if overlap is None else overlap
            window_starts(window, window, overlap)  # validates
        self.window = window
        self.overlap = overlap if window is not None else None
        if x0_range is not None:
            lo, hi = (torch.as_tensor(v, dtype=torch.float32).cpu() for v in x0_range)
            if lo.shape != hi.shape or not bool(torch.all(lo <= hi)):
                raise ValueError(
                    f"x0_range needs lo <= hi of one shape, got shapes {tuple(lo.shape)}, {tuple(hi.shape)}"
                )
            x0_range = (lo, hi)
        self.x0_range = x0_range
        if text_encoder is not None:
            width = getattr(getattr(self.backbone, "config", None), "context_dim", None)
            if width != text_encoder.dim:
                raise ValueError(
                    f"the text encoder's width {text_encoder.dim} differs from the backbone's "
                    f"context_dim {width}"
                )
            text_encoder.eval()
        self.text_encoder = text_encoder

    # ----------------------------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        """Where the denoiser's weights are."""
        return next(self.denoiser.parameters()).device

    def to(self: P, device: str | torch.device) -> P:
        """Move the denoiser, the adapter and the text encoder; returns self."""
        self.denoiser.to(device)
        if self.adapter is not None:
            self.adapter.to(device)
        if self.text_encoder is not None:
            self.text_encoder.to(device)
        return self

    @property
    def backbone(self) -> nn.Module:
        """The network inside the denoiser."""
        return self.denoiser.backbone

    @property
    def num_classes(self) -> int | None:
        """Number of classes of a class-conditional backbone (None otherwise)."""
        config = getattr(self.backbone, "config", None)
        return getattr(config, "num_classes", None)

    @property
    def null_label(self) -> int | None:
        """The label index meaning "no class" (used for guidance)."""
        return self.num_classes

    def sigmas(self, steps: int | None = None, grid: str | None = None) -> Tensor:
        """The σ grid ([steps + 1] float64, ending in 0) of the given or default settings."""
        steps = self.sampling.steps if steps is None else steps
        grid = self.sampling.grid if grid is None else grid
        schedule = self.denoiser.schedule
        if grid == "default":
            return schedule.default_grid(steps)
        if grid == "karras":
            return karras(steps, schedule.sigma_min, schedule.sigma_max, self.sampling.rho)
        if grid == "exponential":
            return exponential(steps, schedule.sigma_min, schedule.sigma_max)
        raise ValueError(f"unknown grid {grid!r}; choose from {GRIDS}")

    def label_tensor(self, label: Any, num: int) -> Tensor | None:
        """Class indices [num] from an int, a name, a sequence of them (one per sample) or a tensor.

        Raises:
            ValueError: For a model without classes, an unknown name or an index out of range.
        """
        if label is None:
            return None
        n = self.num_classes
        if n is None:
            raise ValueError("this model was trained without class labels; do not pass label=")
        items = label.tolist() if isinstance(label, Tensor) else label
        items = [items] * num if isinstance(items, (int, str)) else list(items)
        if len(items) != num:
            raise ValueError(f"got {len(items)} labels for {num} samples")
        out = []
        for item in items:
            if isinstance(item, str):
                if item.isdigit() and (self.labels is None or item not in self.labels):
                    item = int(item)
                elif self.labels is None or item not in self.labels:
                    raise ValueError(f"unknown label {item!r}; known labels: {self.labels}")
                else:
                    item = self.labels.index(item)
            if not 0 <= int(item) < n:
                raise ValueError(f"label {item} out of range 0..{n - 1}")
            out.append(int(item))
        return torch.tensor(out, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def encode_prompt(
        self, prompt: str | Sequence[str], num: int
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Encode caption(s) into the backbone's cross-attention context and its guidance null.

        The prompts and the null caption are encoded in one batch, so the conditional and unconditional
        contexts share the token length L (classifier-free guidance concatenates them in one call).

        Args:
            prompt: One caption for all ``num`` samples, or one per sample.
            num: Number of samples B.

        Returns:
            ``(cond, uncond)``: ``cond = {"context": [B, L, D], "context_mask": [B, L]}`` and ``uncond``
            the null caption's ``{"context": [1, L, D], "context_mask": [1, L]}``.

        Raises:
            ValueError: For a pipeline without a text encoder or a wrong number of prompts.
        """
        from multidiff.nn.text import NULL_CAPTION

        if self.text_encoder is None:
            raise ValueError("this model was trained without captions (no text encoder); do not pass prompt=")
        prompts = [prompt] * num if isinstance(prompt, str) else [str(p) for p in prompt]
        if len(prompts) != num:
            raise ValueError(f"got {len(prompts)} prompts for {num} samples")
        context, mask = self.text_encoder.encode([*prompts, NULL_CAPTION])  # (B+1, L, D), (B+1, L)
        context = context.float()
        cond = {"context": context[:num], "context_mask": mask[:num]}  # (B, L, D), (B, L)
        uncond = {"context": context[-1:], "context_mask": mask[-1:]}  # (1, L, D), (1, L)
        return cond, uncond

    @staticmethod
    def seeds(num: int, seed: int | Sequence[int] | None) -> list[int]:
        """Per-sample seeds: ``seed + k`` for sample k (a fresh random base seed when None)."""
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        if isinstance(seed, int):
            return [seed + k for k in range(num)]
        seeds = [int(s) for s in seed]
        if len(seeds) != num:
            raise ValueError(f"got {len(seeds)} seeds for {num} samples")
        return seeds

    # ----------------------------------------------------------------------------------- sampling
    def guided_denoiser(
        self,
        cond: dict[str, Any],
        *,
        guidance: float,
        uncond: Mapping[str, Any] | None = None,
        length: int | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Callable[..., Tensor]:
        """Compose windows, guidance, static thresholding and inpainting around the denoiser (see the
        module docstring)."""
        d: Callable[..., Tensor] = self.denoiser
        if self.window is not None and length is not None and length > self.window:
            d = WindowedDenoiser(d, self.window, self.overlap or 0, self.time_axis)
        if uncond is None and "labels" in cond and self.null_label is not None:
            uncond = {"labels": self.null_label}
        if guidance != 1.0 and uncond:
            d = cfg(
                d,
                guidance,
                uncond=uncond,
                interval=self.sampling.guidance_interval,
                rescale=self.sampling.guidance_rescale,
            )
        if self.x0_range is not None:  # on the device once per call, not once per step
            lo, hi = (v.to(self.device) for v in self.x0_range)
            d = StaticThreshold(d, lo, hi)
        if mask is not None:
            if known is None:
                raise ValueError("a mask needs known= data")
            d = inpaint(d, known, mask)
        return d

    @torch.no_grad()
    def sample(
        self,
        num: int,
        shape: Sequence[int],
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        grid: str | None = None,
        label: Any = None,
        seed: int | Sequence[int] | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        strength: float | None = None,
        cond: Mapping[str, Any] | None = None,
        uncond: Mapping[str, Any] | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        sampler_options: Mapping[str, Any] | None = None,
        prompt: str | Sequence[str] | None = None,
    ) -> Tensor:
        """Draw ``num`` latents of ``shape`` (without the batch axis).

        Args:
            num: Number of samples B.
            shape: Latent shape per sample, e.g. ``(C, M, T)``.
            steps: Sampler steps (default from :attr:`sampling`).
            sampler: Sampler name (default from :attr:`sampling`).
            guidance: CFG scale; applied when labels (or ``uncond``) are given and it is not 1.
            grid: σ grid name.
            label: Class label(s) (see :meth:`label_tensor`); None: the null label of a class model.
            seed: Base seed (sample k uses ``seed + k``) or one seed per sample.
            known: Known clean latents ``[B or 1, *shape]`` for inpainting (with ``mask``) or SDEdit
                (with ``strength``).
            mask: 1 where ``known`` is kept, broadcastable to ``[B, *shape]``.
            strength: SDEdit strength in (0, 1]: start from ``known`` noised to the σ at which this fraction
                of the grid's steps remains (1: from σ_max).
            cond: Further conditioning keywords for the backbone.
            uncond: Their unconditional values for guidance.
            callback: Called after every sampler step with the sampler's dict.
            progress: Show a tqdm bar over the sampler steps.
            sampler_options: Extra keywords for the sampler (e.g. ``eta``).
            prompt: Caption(s) for a model with a text encoder (see :meth:`encode_prompt`); guided against
                the null caption. None with a text encoder: the null caption (unconditional samples).

        Returns:
            Latents ``[B, *shape]`` (float32).
        """
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        shape = tuple(int(s) for s in shape)
        guidance = self.sampling.guidance if guidance is None else float(guidance)
        steps = self.sampling.steps if steps is None else steps
        sample_fn = get_sampler(sampler or self.sampling.sampler)
        device = self.device
        gens = [torch.Generator().manual_seed(s) for s in self.seeds(num, seed)]
        sigmas = self.sigmas(steps, grid)
        if known is not None:
            known = torch.as_tensor(known, dtype=torch.float32, device=device)
            try:
                known = known.expand(num, *shape)
            except RuntimeError as err:
                raise ValueError(
                    f"known of shape {tuple(known.shape)} does not fit [{num}, {shape}]"
                ) from err
        if mask is not None:
            mask = torch.as_tensor(mask, device=device).float()
        if strength is not None:
            if known is None:
                raise ValueError("strength (SDEdit) needs known= input to start from")
            if not 0.0 < strength <= 1.0:
                raise ValueError(f"strength must lie in (0, 1], got {strength}")
            remaining = max(1, round(strength * steps))
            sigmas = sigmas[steps - remaining :]  # the last `remaining` steps of the grid
        x = noise_like(torch.empty((num, *shape)), gens).to(device) * float(sigmas[0])  # (B, *shape)
        if strength is not None:
            x = known + x  # SDEdit: x0 = the input, noised to sigmas[0]
        cond = dict(cond or {})
        labels = self.label_tensor(label, num)
        if labels is not None:
            cond["labels"] = labels
        if prompt is not None or self.text_encoder is not None:
            from multidiff.nn.text import NULL_CAPTION

            text, null = self.encode_prompt(NULL_CAPTION if prompt is None else prompt, num)
            cond.update(text)
            if prompt is not None:
                uncond = dict(uncond or {})
                if labels is not None and "labels" not in uncond and self.null_label is not None:
                    uncond["labels"] = self.null_label  # guide on the label and the caption together
                uncond.update(null)
        denoiser = self.guided_denoiser(
            cond, guidance=guidance, uncond=uncond, length=shape[self.time_axis], known=known, mask=mask
        )
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sigmas) - 1, desc="sampling", unit="step", disable=not progress, leave=False)

        def on_step(info: dict[str, Any]) -> None:
            bar.update(1)
            if callback is not None:
                callback(info)

        amp = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda" and self.sampling.precision == "bf16"
            else nullcontext()
        )
        try:
            with amp:
                x = sample_fn(
                    denoiser,
                    x,
                    sigmas,
                    cond=cond,
                    generator=gens,
                    callback=on_step,
                    **dict(sampler_options or {}),
                )
        finally:
            bar.close()
        return x.float()

    def decode(self, latents: Tensor) -> Any:
        """Latents -> media (the adapter's ``decode``; latents unchanged without an adapter)."""
        if self.adapter is None:
            return latents
        return self.adapter.decode(latents)

    def generate(self, num: int, *, shape: Sequence[int], **kwargs: Any) -> Any:
        """:meth:`sample` then :meth:`decode`; keywords as for :meth:`sample`."""
        return self.decode(self.sample(num, shape, **kwargs))

    # ----------------------------------------------------------------------------------- saving
    def adapter_to_dict(self) -> dict[str, Any] | None:
        """The adapter's settings for ``config.json`` (None without an adapter)."""
        if self.adapter is None:
            return None
        to_dict = getattr(self.adapter, "to_dict", None)
        if to_dict is None:
            raise ValueError(
                f"{type(self).__name__} cannot save an adapter of type {type(self.adapter).__name__}"
            )
        return to_dict()

    def save_adapter_files(self, folder: Path) -> None:
        """Write adapter weight files beside ``config.json`` (none by default)."""

    @classmethod
    def adapter_from_dict(cls, d: Mapping[str, Any] | None, folder: Path) -> nn.Module | None:
        """Rebuild the adapter from :meth:`adapter_to_dict` output (the base pipeline has none)."""
        if d is not None:
            raise ValueError(f"{folder}: {cls.__name__} cannot rebuild an adapter of type {d.get('type')!r}")
        return None

    @classmethod
    def init_kwargs_from_config(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Extra constructor keywords a subclass reads from ``config.json`` (none here)."""
        return {}

    def config_dict(self) -> dict[str, Any]:
        """Everything ``config.json`` holds."""
        from multidiff.nn.io import config_to_dict

        backbone = self.backbone
        name = type(backbone).__name__
        if name not in _backbones():
            raise ValueError(f"cannot save a pipeline with backbone {name}; known: {sorted(_backbones())}")
        d = self.denoiser
        return {
            "pipeline": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "backbone": {"type": name, "config": config_to_dict(backbone.config)},
            "denoiser": {
                "prediction": d.prediction,
                "sigma_data": d.sigma_data,
                "schedule": _schedule_to_dict(d.schedule),
            },
            "sampling": dataclasses.asdict(self.sampling),
            "labels": self.labels,
            "window": {"length": self.window, "overlap": self.overlap},
            "x0_range": None if self.x0_range is None else [v.tolist() for v in self.x0_range],
            "adapter": self.adapter_to_dict(),
            "text_encoder": self.text_encoder_to_dict(),
        }

    def text_encoder_to_dict(self) -> dict[str, Any] | None:
        """``{"type": "byte"}`` (weights in ``text_encoder/``), ``{"type": "hf", "path": ...}`` (a local
        transformers folder, referenced, not copied) or None."""
        from multidiff.nn.text import ByteTextEncoder, HFTextEncoder

        enc = self.text_encoder
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

    @staticmethod
    def text_encoder_from_dict(d: Mapping[str, Any] | None, folder: Path) -> nn.Module | None:
        """Rebuild the text encoder that :meth:`text_encoder_to_dict` describes."""
        from multidiff.nn.text import ByteTextEncoder, load_text_encoder

        if d is None:
            return None
        source = str(folder / CONFIG_NAME)
        if d.get("type") == "byte":
            sub = folder / TEXT_ENCODER_FOLDER
            if not (sub / CONFIG_NAME).is_file():
                raise ValueError(
                    f"{source} names a byte text encoder but {sub} is missing or has no config.json"
                )
            return ByteTextEncoder.from_pretrained(sub)
        if d.get("type") == "hf":
            path = Path(str(d.get("path")))
            if not path.is_dir():
                raise ValueError(f"{source}: the transformers text encoder folder {path} does not exist")
            return load_text_encoder(path)
        raise ValueError(f"{source}: unknown text encoder type {d.get('type')!r}; known: byte, hf")

    def save_pretrained(
        self, directory: str | os.PathLike[str], state_dict: Mapping[str, Tensor] | None = None
    ) -> Path:
        """Write ``config.json`` and ``denoiser.safetensors`` (and adapter files) into ``directory``.

        Args:
            directory: Created if missing.
            state_dict: Denoiser weights to save instead of the current ones (e.g. EMA weights).
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config_dict()
        (folder / CONFIG_NAME).write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _save_tensors(
            folder / WEIGHTS_NAME, state_dict if state_dict is not None else self.denoiser.state_dict()
        )
        self.save_adapter_files(folder)
        from multidiff.nn.text import ByteTextEncoder

        if isinstance(self.text_encoder, ByteTextEncoder):
            self.text_encoder.save_pretrained(folder / TEXT_ENCODER_FOLDER)
        return folder

    @classmethod
    def from_pretrained(
        cls: type[P], directory: str | os.PathLike[str], *, device: str | torch.device | None = None
    ) -> P:
        """Rebuild a pipeline saved by :meth:`save_pretrained`.

        Called on :class:`Pipeline` itself, it builds whichever subclass the folder names (the subclass's
        module must be imported); on a subclass, it refuses a folder written by an unrelated pipeline.

        Raises:
            ValueError: For a missing folder or file, unreadable JSON, an unknown backbone or schedule, or
                weights that do not match the config (the message names the folder and the problem).
        """

        folder = Path(directory)
        data = _read_config(folder)
        source = str(folder / CONFIG_NAME)
        kind = data["pipeline"]
        target: type[Pipeline] | None = cls if kind == cls.__name__ else None
        if target is None:
            target = next((s for s in _subclasses(cls) if s.__name__ == kind), None)
        if target is None:
            raise ValueError(f"{source} describes a {kind!r} pipeline, which {cls.__name__} cannot load")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(
                f"{source} has format version {data['format_version']}; this multidiff reads {FORMAT_VERSION}"
            )
        bb = data["backbone"]
        backbones = _backbones()
        if bb.get("type") not in backbones:
            raise ValueError(
                f"{source}: unknown backbone type {bb.get('type')!r}; known: {sorted(backbones)}"
            )
        bcls = backbones[bb["type"]]
        backbone = bcls(config_from_dict(bcls.config_class, bb["config"], source=source))  # type: ignore[attr-defined,call-arg]
        dd = data["denoiser"]
        if dd.get("prediction") not in PREDICTIONS:
            raise ValueError(f"{source}: unknown prediction {dd.get('prediction')!r}; known: {PREDICTIONS}")
        denoiser = Denoiser(
            backbone, dd["prediction"], _schedule_from_dict(dd["schedule"], source), float(dd["sigma_data"])
        )
        state = load_matching_state(folder / WEIGHTS_NAME, denoiser.state_dict(), "denoiser")
        denoiser.load_state_dict(state, strict=True)
        s = dict(data["sampling"])
        unknown = sorted(set(s) - {f.name for f in dataclasses.fields(SamplingConfig)})
        if unknown:
            raise ValueError(f"{source}: unknown sampling settings {unknown}")
        if s.get("guidance_interval") is not None:
            s["guidance_interval"] = tuple(s["guidance_interval"])
        window = data.get("window") or {}
        pipe = target(
            denoiser,
            target.adapter_from_dict(data.get("adapter"), folder),
            sampling=SamplingConfig(**s),
            labels=data.get("labels"),
            window=window.get("length"),
            overlap=window.get("overlap"),
            x0_range=None
            if data.get("x0_range") is None
            else tuple(torch.tensor(v) for v in data["x0_range"]),
            text_encoder=target.text_encoder_from_dict(data.get("text_encoder"), folder),
            **target.init_kwargs_from_config(data, source),
        )
        return pipe.to(device) if device is not None else pipe


def load_pipeline(directory: str | os.PathLike[str], *, device: str | torch.device | None = None) -> Pipeline:
    """Load any saved pipeline (:class:`Pipeline` or the subclass the folder names)."""
    return Pipeline.from_pretrained(directory, device=device)


# ---------------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------------


def mel_frame_mask(mask: Tensor, spec: Any, num_samples: int | None = None) -> Tensor:
    """A waveform mask ``[N]`` or ``[B, N]`` (1 = known / real) -> a mel-frame mask ``[B or 1, 1, 1, T]``.

    A frame counts only where its whole analysis window (``n_fft`` samples) is inside the mask, so no
    kept frame mixes in generated or padded audio. The signal edges use the nearest sample's value (as
    the reflect/replicate padding of the STFT does).

    Args:
        mask: Samples, bool or float in [0, 1].
        spec: The :class:`~multidiff.modalities.audio.MelSpec`.
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


def _vocoder_to_dict(vocoder: nn.Module) -> dict[str, Any]:
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


class AudioPipeline(Pipeline):
    """Waveforms from a mel-spectrogram diffusion model (a :class:`~multidiff.modalities.audio.MelAdapter`).

    Latents are normalised log-mels ``[B, C, M, T]``; time is the last axis.

    Args:
        denoiser: The denoiser over mel latents.
        adapter: The :class:`MelAdapter` (with its fitted statistics and vocoder).
        **kwargs: As for :class:`Pipeline` (``window`` counts mel frames).
    """

    time_axis: ClassVar[int] = -1

    def __init__(self, denoiser: Denoiser, adapter: nn.Module, **kwargs: Any) -> None:
        from multidiff.modalities.audio import MelAdapter

        if not isinstance(adapter, MelAdapter):
            raise ValueError(f"AudioPipeline needs a MelAdapter, got {type(adapter).__name__}")
        super().__init__(denoiser, adapter, **kwargs)

    @property
    def sample_rate(self) -> int:
        """Sampling rate of the generated audio in Hz."""
        return self.adapter.spec.sample_rate  # type: ignore[union-attr]

    @property
    def channels(self) -> int:
        """Audio channels C (1 mono, 2 stereo)."""
        return self.adapter.config.channels  # type: ignore[union-attr]

    def num_samples(self, seconds: float) -> int:
        """Waveform length N of ``seconds``."""
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        return int(round(seconds * self.sample_rate))

    def frame_mask(self, mask: Tensor, num_samples: int) -> Tensor:
        """A waveform mask ``[N]`` or ``[B, N]`` (1 = known) -> a mel-frame mask ``[B or 1, 1, 1, T]``
        (see :func:`mel_frame_mask`)."""
        return mel_frame_mask(torch.as_tensor(mask, device=self.device), self.adapter.spec, num_samples)  # type: ignore[union-attr]

    def encode_known(self, wave: Tensor, num_samples: int) -> Tensor:
        """A waveform ``[C, N']`` or ``[B, C, N']`` (zero-padded or cut to N) -> mel latents."""
        w = torch.as_tensor(wave, dtype=torch.float32, device=self.device)
        if w.ndim == 1:
            w = w[None]
        if w.ndim == 2:
            w = w[None]
        if w.ndim != 3 or w.shape[1] != self.channels:
            raise ValueError(
                f"known audio must be [{self.channels}, N] or [B, {self.channels}, N], got {tuple(w.shape)}"
            )
        w = F.pad(w, (0, max(0, num_samples - w.shape[-1])))[..., :num_samples]
        return self.adapter.encode(w)  # type: ignore[union-attr]  # (B, C, M, T)

    def generate(  # type: ignore[override]
        self,
        num: int,
        seconds: float,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        label: Any = None,
        prompt: str | Sequence[str] | None = None,
        seed: int | Sequence[int] | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        strength: float | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> Tensor:
        """Generate ``num`` clips of ``seconds``.

        Args:
            num: Number of clips B.
            seconds: Duration; longer than the training clips is done with overlapping windows.
            steps: Sampler steps.
            sampler: Sampler name.
            guidance: CFG scale (with ``label``).
            label: Class label(s): index, name, or one per clip.
            prompt: Caption(s) for a model with a text encoder: one for all clips or one per clip.
            seed: Base seed (clip k uses ``seed + k``) or one per clip.
            known: Audio ``[C, N']`` or ``[B, C, N']`` at :attr:`sample_rate`: kept where ``mask`` is 1
                (inpainting, continuation), or the input of audio-to-audio with ``strength``.
            mask: Samples ``[N']`` or ``[B, N']``, 1 where ``known`` is kept.
            strength: Audio-to-audio (SDEdit) strength in (0, 1].
            callback: Called after every sampler step.
            progress: Show a progress bar.
            **kwargs: Further :meth:`Pipeline.sample` keywords (``grid``, ``sampler_options``, …).

        Returns:
            Waveforms ``[B, C, N]`` at :attr:`sample_rate`, ``N = round(seconds · sample_rate)``.
        """
        n = self.num_samples(seconds)
        shape = self.adapter.latent_shape(n / self.sample_rate)  # type: ignore[union-attr]
        known_z = self.encode_known(known, n) if known is not None else None
        mask_z = self.frame_mask(mask, n) if mask is not None else None
        latents = self.sample(
            num,
            shape,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            label=label,
            prompt=prompt,
            seed=seed,
            known=known_z,
            mask=mask_z,
            strength=strength,
            callback=callback,
            progress=progress,
            **kwargs,
        )
        return self.adapter.decode(latents, length=n)  # type: ignore[union-attr]  # (B, C, N)

    def continue_audio(self, clip: Tensor, seconds: float, **kwargs: Any) -> Tensor:
        """Continue ``clip`` (``[C, N']`` or ``[B, C, N']``) to a total of ``seconds``; keywords as :meth:`generate`.

        The clip's frames are kept (inpainting of the rest); the output starts with the re-vocoded clip.
        """
        clip = torch.as_tensor(clip)
        mask = torch.zeros(self.num_samples(seconds))
        mask[: clip.shape[-1]] = 1
        num = kwargs.pop("num", clip.shape[0] if clip.ndim == 3 else 1)
        return self.generate(num, seconds, known=clip, mask=mask, **kwargs)

    def audio_to_audio(self, wave: Tensor, strength: float, **kwargs: Any) -> Tensor:
        """SDEdit on ``wave`` (``[C, N]`` or ``[B, C, N]``): keep its length; keywords as :meth:`generate`."""
        wave = torch.as_tensor(wave)
        num = kwargs.pop("num", wave.shape[0] if wave.ndim == 3 else 1)
        return self.generate(num, wave.shape[-1] / self.sample_rate, known=wave, strength=strength, **kwargs)

    # ----------------------------------------------------------------------------------- saving
    def adapter_to_dict(self) -> dict[str, Any]:
        d = self.adapter.to_dict()  # type: ignore[union-attr]
        if "stats" not in d:
            raise ValueError(
                "the MelAdapter has no fitted statistics; call adapter.fit_stats(...) before saving"
            )
        d["vocoder"] = _vocoder_to_dict(self.adapter.vocoder)  # type: ignore[union-attr]
        return d

    def save_adapter_files(self, folder: Path) -> None:
        from multidiff.modalities.vocoders import HiFiGAN

        vocoder = self.adapter.vocoder  # type: ignore[union-attr]
        if isinstance(vocoder, HiFiGAN):
            _save_tensors(folder / VOCODER_WEIGHTS_NAME, vocoder.state_dict())

    @classmethod
    def adapter_from_dict(cls, d: Mapping[str, Any] | None, folder: Path) -> nn.Module:
        from multidiff.modalities.audio import MelAdapter, MelSpec
        from multidiff.modalities.vocoders import GriffinLim, HiFiGAN, HiFiGANConfig

        source = str(folder / CONFIG_NAME)
        if d is None or d.get("type") != "mel":
            raise ValueError(
                f"{source}: an AudioPipeline needs a mel adapter, got {None if d is None else d.get('type')!r}"
            )
        d = dict(d)
        v = d.pop("vocoder", None) or {"type": "griffinlim"}
        spec = MelSpec.from_dict(d["spec"])
        if v["type"] == "griffinlim":
            vocoder: nn.Module = GriffinLim(
                spec,
                n_iter=int(v.get("n_iter", 64)),
                momentum=float(v.get("momentum", 0.99)),
                nnls_iter=int(v.get("nnls_iter", 100)),
            )
        elif v["type"] == "hifigan":
            vocoder = HiFiGAN(HiFiGANConfig.from_dict(v["config"]), MelSpec.from_dict(v["spec"]))
            vocoder.load_state_dict(
                load_matching_state(folder / VOCODER_WEIGHTS_NAME, vocoder.state_dict(), "vocoder")
            )
            vocoder.eval()
        else:
            raise ValueError(f"{source}: unknown vocoder type {v['type']!r}; known: griffinlim, hifigan")
        return MelAdapter.from_dict(d, vocoder)


# ---------------------------------------------------------------------------------------------------
# Video and images
# ---------------------------------------------------------------------------------------------------

VAE_FOLDER = "vae"


def _parse_size(size: int | Sequence[int] | None, default: tuple[int, int] | None = None) -> tuple[int, int]:
    if size is None:
        if default is None:
            raise ValueError("pass size= (this pipeline records no training size)")
        return default
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


def _save_vae(image_adapter: nn.Module, folder: Path) -> None:
    """Copy the adapter's VAE (if any) into ``folder/vae`` so the pipeline folder stands alone."""
    vae = getattr(image_adapter, "vae", None)
    if vae is not None:
        vae.save_pretrained(str(folder / VAE_FOLDER), safe_serialization=True)


def _vae_path(d: Mapping[str, Any], folder: Path) -> Path | None:
    """The VAE saved beside the config when the adapter is in VAE space (else the recorded path is used)."""
    if d.get("space") == "vae" and (folder / VAE_FOLDER).is_dir():
        return folder / VAE_FOLDER
    return None


class VideoPipeline(Pipeline):
    """Videos from a spatio-temporal latent diffusion model (a :class:`~multidiff.modalities.video.VideoAdapter`).

    Latents are ``[B, C, F, h, w]``; frames are axis 2. A backbone with ``cond_channels = C + 1`` was trained
    with frame-mask conditioning (:mod:`multidiff.train.masks`): it receives ``[known · mask, mask]`` as
    extra channels (zeros for unconditional generation). Known frames are in addition pinned in x0 space by
    :func:`multidiff.core.guidance.inpaint` (``replace_known``), which makes them exact in any model,
    mask-trained or not.

    Args:
        denoiser: The denoiser over video latents.
        adapter: The :class:`VideoAdapter` (pixel space or a per-frame VAE with fitted statistics).
        **kwargs: As for :class:`Pipeline` (``window`` counts frames).
    """

    time_axis: ClassVar[int] = -3

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module,
        *,
        size: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        from multidiff.modalities.video import VideoAdapter

        if not isinstance(adapter, VideoAdapter):
            raise ValueError(f"VideoPipeline needs a VideoAdapter, got {type(adapter).__name__}")
        super().__init__(denoiser, adapter, **kwargs)
        self.size = None if size is None else _parse_size(size)
        extra = int(getattr(getattr(self.backbone, "config", None), "cond_channels", 0) or 0)
        if extra not in (0, adapter.latent_channels + 1):
            raise ValueError(
                f"the backbone takes {extra} cond_channels; a frame-mask model needs "
                f"{adapter.latent_channels + 1} (latents + mask) and an unconditional one 0"
            )
        self.frame_conditioned = extra > 0

    def latent_shape(self, frames: int, size: int | Sequence[int]) -> tuple[int, int, int, int]:
        """Latent shape ``(C, F, h, w)`` of ``frames`` frames of ``size`` (int or ``(H, W)``)."""
        return self.adapter.latent_shape(frames, *_parse_size(size, self.size))  # type: ignore[union-attr]

    def encode_known(self, known: Tensor, frames: int, size: int | Sequence[int]) -> Tensor:
        """Frames ``[F', H, W, C]`` or ``[B, F', H, W, C]`` (uint8 or [-1, 1] float) -> latents
        ``[B, C', F, h, w]``, zero frames appended up to ``frames`` (F' > F is refused)."""
        v = torch.as_tensor(known)
        if v.ndim == 4:
            v = v[None]
        h, w = _parse_size(size, self.size)
        if v.ndim != 5 or tuple(v.shape[2:4]) != (h, w):
            raise ValueError(
                f"known frames must be [F', {h}, {w}, C] or [B, F', {h}, {w}, C], got {tuple(v.shape)}"
            )
        if v.shape[1] > frames:
            raise ValueError(f"{v.shape[1]} known frames for a video of {frames} frames")
        z = self.adapter.encode(v.to(self.device))  # type: ignore[union-attr]  # (B, C', F', h, w)
        return F.pad(z, (0, 0, 0, 0, 0, frames - z.shape[2]))  # (B, C', F, h, w)

    def frame_mask(self, mask: Tensor, frames: int) -> Tensor:
        """A per-frame mask ``[F']`` or ``[B, F']`` (1 = known) -> ``[B or 1, 1, F, 1, 1]`` (zero-padded to F)."""
        m = torch.as_tensor(mask, device=self.device).float()
        if m.ndim == 1:
            m = m[None]
        if m.ndim != 2 or m.shape[1] > frames:
            raise ValueError(
                f"a video mask must be [F'] or [B, F'] with F' <= {frames}, got {tuple(m.shape)}"
            )
        m = F.pad(m, (0, frames - m.shape[1]))  # (B, F)
        return m[:, None, :, None, None]  # (B, 1, F, 1, 1)

    def generate(  # type: ignore[override]
        self,
        num: int,
        frames: int | None = None,
        size: int | Sequence[int] | None = None,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        label: Any = None,
        seed: int | Sequence[int] | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        strength: float | None = None,
        replace_known: bool = True,
        decode_chunk: int | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> Tensor:
        """Generate ``num`` videos of ``frames`` frames.

        Args:
            num: Number of videos B.
            frames: Frames F (default: the training length); more than the training length is done with
                overlapping temporal windows.
            size: Frame size, int or ``(H, W)`` (default: the training size).
            steps: Sampler steps.
            sampler: Sampler name.
            guidance: CFG scale (with ``label``).
            label: Class label(s).
            seed: Base seed (video k uses ``seed + k``) or one per video.
            known: Frames ``[F', H, W, C]`` or ``[B, F', H, W, C]`` (F' <= F, uint8): kept where ``mask``
                is 1 (image-to-video, continuation, interpolation), or the input of SDEdit with ``strength``.
            mask: Per-frame ``[F']`` or ``[B, F']``, 1 where ``known`` is kept.
            strength: Video-to-video (SDEdit) strength in (0, 1].
            replace_known: Also pin the known frames in x0 space (:func:`~multidiff.core.guidance.inpaint`);
                they then come back exactly (up to the VAE). Needed for a model without frame-mask training.
            decode_chunk: Frames per VAE decode call (lower it if decoding runs out of memory).
            callback: Called after every sampler step.
            progress: Show a progress bar.
            **kwargs: Further :meth:`Pipeline.sample` keywords.

        Returns:
            uint8 frames ``[B, F, H, W, C]`` on the CPU.
        """
        if frames is None:
            if self.window is None:
                raise ValueError("pass frames= (this pipeline records no training length)")
            frames = self.window
        shape = self.latent_shape(frames, size)
        known_z = self.encode_known(known, frames, size) if known is not None else None
        mask_z = self.frame_mask(mask, frames) if mask is not None else None
        if mask_z is not None and known_z is None:
            raise ValueError("a mask needs known= frames")
        cond = dict(kwargs.pop("cond", None) or {})
        if self.frame_conditioned:
            if known_z is not None and mask_z is not None:
                cc = frame_cond_channels(known_z.expand(num, *shape), mask_z.expand(num, 1, frames, 1, 1))
            else:
                cc = torch.zeros((num, shape[0] + 1, *shape[1:]), device=self.device)
            cond["cond_channels"] = cc  # (B, C + 1, F, h, w)
        latents = self.sample(
            num,
            shape,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            label=label,
            seed=seed,
            known=known_z,
            mask=mask_z if replace_known else None,
            strength=strength,
            cond=cond,
            callback=callback,
            progress=progress,
            **kwargs,
        )
        return self.adapter.decode(latents, chunk_frames=decode_chunk, out_device="cpu")  # type: ignore[union-attr]

    def image_to_video(self, image: Tensor, frames: int, **kwargs: Any) -> Tensor:
        """Animate ``image`` (``[H, W, C]`` or ``[B, H, W, C]``) as the first of ``frames`` frames."""
        image = torch.as_tensor(image)
        clip = image[:, None] if image.ndim == 4 else image[None]  # (B, 1, H, W, C) or (1, H, W, C)
        num = kwargs.pop("num", image.shape[0] if image.ndim == 4 else 1)
        size = tuple(image.shape[-3:-1])
        return self.generate(num, frames, size, known=clip, mask=torch.ones(1), **kwargs)

    def continue_video(self, clip: Tensor, frames: int, **kwargs: Any) -> Tensor:
        """Continue ``clip`` (``[F', H, W, C]`` or ``[B, F', H, W, C]``) to ``frames`` frames in all."""
        clip = torch.as_tensor(clip)
        num = kwargs.pop("num", clip.shape[0] if clip.ndim == 5 else 1)
        size = tuple(clip.shape[-3:-1])
        return self.generate(num, frames, size, known=clip, mask=torch.ones(clip.shape[-4]), **kwargs)

    def interpolate(self, first: Tensor, last: Tensor, frames: int, **kwargs: Any) -> Tensor:
        """``frames`` frames from ``first`` to ``last`` (each ``[H, W, C]``), the inner ones generated."""
        first, last = torch.as_tensor(first), torch.as_tensor(last)
        if frames < 2:
            raise ValueError(f"interpolation needs frames >= 2, got {frames}")
        clip = torch.zeros((frames, *first.shape), dtype=first.dtype)
        clip[0], clip[-1] = first, last
        mask = torch.zeros(frames)
        mask[0] = mask[-1] = 1
        return self.generate(
            kwargs.pop("num", 1), frames, tuple(first.shape[:2]), known=clip, mask=mask, **kwargs
        )

    # ----------------------------------------------------------------------------------- saving
    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "size": None if self.size is None else list(self.size)}

    @classmethod
    def init_kwargs_from_config(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        return {"size": data.get("size")}

    def save_adapter_files(self, folder: Path) -> None:
        _save_vae(self.adapter.image, folder)  # type: ignore[union-attr]

    @classmethod
    def adapter_from_dict(cls, d: Mapping[str, Any] | None, folder: Path) -> nn.Module:
        from multidiff.modalities.video import VideoAdapter

        if d is None or d.get("type") != "video":
            raise ValueError(
                f"{folder / CONFIG_NAME}: a VideoPipeline needs a video adapter, got "
                f"{None if d is None else d.get('type')!r}"
            )
        return VideoAdapter.from_dict(d, vae_path=_vae_path(d["image"], folder))


def frame_cond_channels(known: Tensor, mask: Tensor) -> Tensor:
    """The ``C + 1`` channels of frame-mask conditioning, ``[known · mask, mask]`` (for ``cond_channels=``).

    Masked-frame conditioning (Voleti et al. 2022, "MCVD", Sec. 3) with the mask given explicitly; see
    :mod:`multidiff.train.masks` for the training curriculum.

    Args:
        known: Clean latents ``[B, C, F, H, W]`` (values on unknown frames are ignored).
        mask: ``[B, 1, F, 1, 1]`` (or broadcastable to ``[B, 1, F, H, W]``), 1 on known frames.

    Returns:
        ``[B, C + 1, F, H, W]``.
    """
    if known.ndim != 5:
        raise ValueError(f"known latents must be [B, C, F, H, W], got shape {tuple(known.shape)}")
    b, _, f, h, w = known.shape
    m = mask.to(device=known.device, dtype=known.dtype).expand(b, 1, f, h, w)  # (B, 1, F, H, W)
    return torch.cat([known * m, m], dim=1)  # (B, C + 1, F, H, W)


class ImagePipeline(Pipeline):
    """Images from an image latent diffusion model (an :class:`~multidiff.modalities.image.ImageAdapter`).

    Latents are ``[B, C, h, w]``; ``window`` (if set) counts latent columns, so wide images are made by
    overlapping windows along the width.

    Args:
        denoiser: The denoiser over image latents.
        adapter: The :class:`ImageAdapter` (pixels or a VAE with fitted statistics).
        **kwargs: As for :class:`Pipeline`.
    """

    time_axis: ClassVar[int] = -1

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module,
        *,
        size: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        from multidiff.modalities.image import ImageAdapter

        if not isinstance(adapter, ImageAdapter):
            raise ValueError(f"ImagePipeline needs an ImageAdapter, got {type(adapter).__name__}")
        super().__init__(denoiser, adapter, **kwargs)
        self.size = None if size is None else _parse_size(size)

    def latent_mask(self, mask: Tensor, size: tuple[int, int]) -> Tensor:
        """A pixel mask ``[H, W]`` or ``[B, H, W]`` (1 = known) -> ``[B or 1, 1, h, w]``: a latent pixel is
        known only where its whole ``downsample x downsample`` patch is."""
        m = torch.as_tensor(mask, device=self.device).float()
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or tuple(m.shape[1:]) != size:
            raise ValueError(
                f"an image mask must be [{size[0]}, {size[1]}] or [B, ...], got {tuple(m.shape)}"
            )
        r = self.adapter.downsample  # type: ignore[union-attr]
        return 1 - F.max_pool2d(1 - m[:, None], kernel_size=r, stride=r)  # (B, 1, h, w)

    def generate(  # type: ignore[override]
        self,
        num: int,
        size: int | Sequence[int] | None = None,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        label: Any = None,
        seed: int | Sequence[int] | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        strength: float | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> Tensor:
        """Generate ``num`` images of ``size`` (int or ``(H, W)``).

        Args:
            known: Image ``[H, W, C]`` or ``[B, H, W, C]`` (uint8): kept where ``mask`` is 1 (inpainting), or
                the input of image-to-image with ``strength``.
            mask: Pixel mask ``[H, W]`` or ``[B, H, W]``, 1 where ``known`` is kept.
            Others: as for :meth:`VideoPipeline.generate`.

        Returns:
            uint8 images ``[B, H, W, C]`` on the CPU.
        """
        h, w = _parse_size(size, self.size)
        shape = self.adapter.latent_shape(h, w)  # type: ignore[union-attr]
        known_z = None
        if known is not None:
            img = torch.as_tensor(known)
            img = img[None] if img.ndim == 3 else img
            if img.ndim != 4 or tuple(img.shape[1:3]) != (h, w):
                raise ValueError(f"known must be [{h}, {w}, C] or [B, {h}, {w}, C], got {tuple(img.shape)}")
            known_z = self.adapter.encode(img.to(self.device))  # type: ignore[union-attr]
        mask_z = self.latent_mask(mask, (h, w)) if mask is not None else None
        latents = self.sample(
            num,
            shape,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            label=label,
            seed=seed,
            known=known_z,
            mask=mask_z,
            strength=strength,
            callback=callback,
            progress=progress,
            **kwargs,
        )
        return self.adapter.decode(latents, out_device="cpu")  # type: ignore[union-attr]

    # ----------------------------------------------------------------------------------- saving
    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "size": None if self.size is None else list(self.size)}

    @classmethod
    def init_kwargs_from_config(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        return {"size": data.get("size")}

    def save_adapter_files(self, folder: Path) -> None:
        _save_vae(self.adapter, folder)  # type: ignore[arg-type]

    @classmethod
    def adapter_from_dict(cls, d: Mapping[str, Any] | None, folder: Path) -> nn.Module:
        from multidiff.modalities.image import ImageAdapter

        if d is None or d.get("type") != "image":
            raise ValueError(
                f"{folder / CONFIG_NAME}: an ImagePipeline needs an image adapter, got "
                f"{None if d is None else d.get('type')!r}"
            )
        return ImageAdapter.from_dict(d, vae_path=_vae_path(d, folder))
