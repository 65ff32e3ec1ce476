"""Pipelines: an adapter, a :class:`~multidiff.core.denoiser.Denoiser` and sampling settings -> ``generate()``.

Sampling (DESIGN.md, "Data flow"): seeded noise · σ_max -> sampler(guided denoiser, σ grid) -> latents ->
adapter.decode -> media. The denoiser the sampler sees is built by composition, innermost first:

1. the model ``D(x, σ, **cond)``;
2. :class:`WindowedDenoiser` when the requested length exceeds the training length: overlapping windows
   along the time axis, their x0 predictions averaged (MultiDiffusion, Bar-Tal et al. 2023, Eq. 5);
3. classifier-free guidance with the null label (:func:`multidiff.core.guidance.cfg`);
4. static thresholding of x0 to the training latents' range, when known (:class:`StaticThreshold`);
5. inpainting / continuation with known latents under a mask (:func:`multidiff.core.guidance.inpaint`).

Sample k of a call is drawn from its own generator seeded ``seed + k``, so its latents do not depend on the
batch size (a Griffin-Lim waveform may: batched FFTs round differently, and its iterations amplify that
into phase differences of a few percent; a neural vocoder adds no such drift). SDEdit (Meng et al. 2022)
starts from the known input noised to the σ at which the fraction ``strength`` of the grid remains.

A pipeline folder holds ``config.json`` (backbone type and config, prediction, schedule, sigma_data,
adapter settings, sampler defaults, label names, window settings) and ``denoiser.safetensors``; an
adapter may add its own weight files (e.g. ``vocoder.safetensors``), and a caption model its trainable text
encoder (``text_encoder/``; a transformers encoder is referenced by its local path). Nothing is pickled.
A prompt reaches the backbone as cross-attention ``context``, guided against the null caption.

:class:`Pipeline` works on latents; subclasses add a modality (:class:`AudioPipeline`, :class:`VideoPipeline`,
:class:`ImagePipeline`: the adapter's (de)serialisation and shapes). A video model trained with frame masks
(:mod:`multidiff.train.masks`) also gets the known frames and their mask as input channels
(:func:`frame_cond_channels`); an adapter's VAE is saved in the pipeline folder (``vae/``).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.core.guidance import (
    StaticThreshold,
    WindowedDenoiser,
    cfg,
    inpaint,
    mask_channels,
    window_starts,
)
from multidiff.core.samplers import get_sampler, noise_like
from multidiff.core.schedules import exponential, karras
from multidiff.modalities.base import Adapter, Extent, load_adapter
from multidiff.nn.graphs import CudaGraphed, replayer, use_graphs
from multidiff.pipeline_checks import check_batch, check_sample_request
from multidiff.serialize import (
    CONFIG_NAME,
    FORMAT_VERSION,
    GRIDS,
    TEXT_ENCODER_FOLDER,
    WEIGHTS_NAME,
    SamplingConfig,
    backbones,
    denoiser_from_dict,
    folder_kind,
    read_config,
    sampling_from_dict,
    save_tensors,
    schedule_to_dict,
    text_encoder_from_dict,
    text_encoder_to_dict,
)

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


P = TypeVar("P", bound="Pipeline")


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]  # depth first


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

    Subclasses set :attr:`time_axis` and :attr:`modality` and add their modality's positional shortcuts;
    the adapter saves and loads itself (:class:`~multidiff.modalities.base.Adapter`).
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
        self._graphed: CudaGraphed | None = None  # made on the first graphed sample, dropped by to()

    # ----------------------------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        """Where the denoiser's weights are."""
        return next(self.denoiser.parameters()).device

    def to(self: P, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> P:
        """Move the denoiser, adapter and text encoder to ``device``; ``dtype`` (bf16 or fp32) casts the
        backbone's weights: bf16 halves their memory and reads; sampling then runs under bf16 autocast."""
        if isinstance(device, torch.dtype):  # .to(torch.bfloat16), as torch's own .to takes it
            device, dtype = None, device if dtype is None else dtype
        if dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"Pipeline.to: dtype must be torch.bfloat16 or torch.float32, got {dtype}")
        before = (self.device, next(self.backbone.parameters()).dtype)
        device = before[0] if device is None else device
        if dtype is not None:  # only then: a backbone of mixed dtypes keeps them when it only moves
            self.denoiser.backbone.to(dtype=dtype)
        self.denoiser.to(device)
        if (self.device, next(self.backbone.parameters()).dtype) != before:
            self._graphed = None  # its graphs belong to the old device or weights
        for part in (self.adapter, self.text_encoder):
            if part is not None:
                part.to(device)
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
        items = label.tolist() if isinstance(label, (Tensor, np.ndarray, np.integer)) else label
        items = [items] * num if isinstance(items, (int, str)) else list(items)
        if len(items) != num:
            raise ValueError(f"got {len(items)} labels for {num} samples")
        out = []
        for item in items:
            if isinstance(item, (bool, np.bool_)) or not isinstance(item, (numbers.Integral, str)):
                raise ValueError(f"a label is a class name or an int index, got {item!r}")
            if isinstance(item, str):
                if self.labels is None and item.isdigit():  # no names: a number typed as text is an index
                    item = int(item)
                elif self.labels is None or item not in self.labels:
                    hint = " (an index is an int, not text)" if item.isdigit() else ""
                    raise ValueError(f"unknown label {item!r}; known labels: {self.labels}{hint}")
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
        prompts = [prompt] * num if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"a prompt is text, got {next(p for p in prompts if not isinstance(p, str))!r}")
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
        one = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
        seeds = [int(seed) + k for k in range(num)] if one else [int(s) for s in seed]
        if len(seeds) != num:
            raise ValueError(f"got {len(seeds)} seeds for {num} samples")
        if seeds and not (0 <= min(seeds) and max(seeds) < 2**63):
            raise ValueError(f"seeds must lie in [0, 2^63) (sample k takes seed + k), got {seed}")
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
        graphs: bool = False,
    ) -> Callable[..., Tensor]:
        """Compose windows, guidance, static thresholding and inpainting around the denoiser (see the
        module docstring); with ``graphs`` the innermost denoiser is the pipeline's
        :class:`~multidiff.nn.graphs.CudaGraphed` one (kept across calls, so later calls replay)."""
        d: Callable[..., Tensor] = self.denoiser
        if graphs:
            d = self._graphed = replayer(self._graphed, self.denoiser)
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

    def initial_scale(self, sigmas: Tensor) -> float:
        """What the initial standard normal noise is multiplied by: the grid's first σ (a family pipeline
        starts where its diffusers pipeline starts)."""
        return float(sigmas[0])

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
        sigmas: Tensor | Sequence[float] | None = None,
        graphs: bool | None = None,
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
            sigmas: An explicit σ grid (decreasing; e.g. a diffusers scheduler's, from
                :func:`~multidiff.interop.diffusers.sigmas_from_scheduler`) instead of ``steps`` and ``grid``.
            graphs: Replay the denoiser from CUDA graphs (:class:`~multidiff.nn.graphs.CudaGraphed`: no launch
                overhead; a shape's first call captures). None: on CUDA; False: never; True: on (CUDA only).

        Returns:
            Latents ``[B, *shape]`` (float32).
        """
        device = self.device
        graphs = use_graphs(graphs, device)
        shape = check_sample_request(
            self, num, shape, steps=steps, sigmas=sigmas, guidance=guidance, label=label, prompt=prompt,
            cond=cond, uncond=uncond, known=known, mask=mask, strength=strength,
        )  # fmt: skip
        guidance = self.sampling.guidance if guidance is None else float(guidance)
        steps = self.sampling.steps if steps is None else steps
        sample_fn = get_sampler(sampler or self.sampling.sampler)
        gens = [torch.Generator().manual_seed(s) for s in self.seeds(num, seed)]
        explicit = sigmas is not None
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).cpu() if explicit else self.sigmas(steps, grid)
        steps = len(sigmas) - 1 if explicit else steps
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
            remaining = max(1, round(strength * steps))
            sigmas = sigmas[steps - remaining :]  # the last `remaining` steps of the grid
        scale = float(sigmas[0]) if strength is not None else self.initial_scale(sigmas)
        x = noise_like(torch.empty((num, *shape)), gens).to(device) * scale  # (B, *shape)
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
            cond,
            guidance=guidance,
            uncond=uncond,
            length=shape[self.time_axis],
            known=known,
            mask=mask,
            graphs=graphs,
        )
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sigmas) - 1, desc="sampling", unit="step", disable=not progress, leave=False)

        def on_step(info: dict[str, Any]) -> None:
            bar.update(1)
            if callback is not None:
                callback(info)

        amp = self.sampling.autocast(device, next(self.backbone.parameters()).dtype)
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

    def default_extent(self) -> Extent:
        """The media extent a request that gives none gets (the training length or size, where recorded)."""
        return Extent()

    def generate(
        self,
        num: int,
        extent: Extent | None = None,
        *,
        shape: Sequence[int] | None = None,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        replace_known: bool = True,
        decode: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Generate ``num`` items of media of ``extent``, written once for every modality against the adapter.

        The adapter gives the latent shape of the extent, encodes the ``known`` media, maps the media ``mask``
        to latents, and decodes; fields the extent leaves out come from :meth:`default_extent`. A backbone
        trained with mask conditioning (``cond_channels = C + 1``, :mod:`multidiff.train.masks`) also gets
        ``[known · mask, mask]`` as input channels (zeros without known media).

        Args:
            num: Number of items B.
            extent: Seconds, frames and/or size of the media (:class:`~multidiff.modalities.base.Extent`).
            shape: Latent shape instead of an extent (a pipeline without an adapter returns latents).
            known: Media kept where ``mask`` is 1 (inpainting, continuation, image-to-video), or the input of
                SDEdit with ``strength=``.
            mask: A mask over the media (1 = known), as the adapter's ``latent_mask`` takes it.
            replace_known: Also pin the known latents in x0 space (:func:`~multidiff.core.guidance.inpaint`).
            decode: Keywords for the adapter's ``decode`` (e.g. ``out_device``, ``chunk_frames``).
            **kwargs: :meth:`sample` keywords (steps, sampler, guidance, label, prompt, seed, strength, ...).
        """
        if self.adapter is None:
            if shape is None:
                raise ValueError("a pipeline without an adapter needs shape= (the latent shape)")
            return self.sample(num, shape, known=known, mask=mask, **kwargs)
        if shape is not None:
            raise ValueError("shape= is for a pipeline without an adapter; give the extent (seconds, frames, size)")
        base = self.default_extent()
        extent = Extent(
            *(getattr(extent, f) if extent is not None and getattr(extent, f) is not None else getattr(base, f)
              for f in ("seconds", "frames", "size"))
        )  # fmt: skip
        shape = tuple(self.adapter.latent_shape(extent))
        known_z = None if known is None else self.adapter.encode_known(known, extent)
        mask_z = (
            None
            if mask is None
            else self.adapter.latent_mask(torch.as_tensor(mask, device=self.device), extent)
        )
        if mask_z is not None and known_z is None:
            raise ValueError("a mask needs known= media")
        check_batch(num, shape, known=known_z, mask=mask_z)
        cond = dict(kwargs.pop("cond", None) or {})
        extra = int(getattr(getattr(self.backbone, "config", None), "cond_channels", 0) or 0)
        if extra and extra == shape[0] + 1:  # mask-conditioned: [known · mask, mask] as input channels
            if known_z is not None and mask_z is not None:
                cond["cond_channels"] = mask_channels(known_z.expand(num, *shape), mask_z)
            else:
                cond["cond_channels"] = torch.zeros((num, shape[0] + 1, *shape[1:]), device=self.device)
        if not replace_known and known_z is not None and "cond_channels" not in cond:
            raise ValueError("replace_known=False leaves the known media to a mask-conditioned model; this one is not")
        keep = replace_known or "strength" in kwargs  # else only the conditioning channels carry them
        latents = self.sample(
            num, shape, known=known_z if keep else None, mask=mask_z if replace_known else None, cond=cond, **kwargs
        )
        return self.adapter.decode(latents, extent, **dict(decode or {}))

    # ----------------------------------------------------------------------------------- saving
    #: The modality of the adapter this pipeline class carries (None: latents only, no adapter).
    modality: ClassVar[str | None] = None

    def adapter_to_dict(self) -> dict[str, Any] | None:
        """The adapter's settings for ``config.json`` (its ``to_config``; None without an adapter)."""
        if self.adapter is None:
            return None
        if not isinstance(self.adapter, Adapter):
            raise ValueError(
                f"{type(self).__name__} cannot save an adapter of type {type(self.adapter).__name__} "
                "(it does not implement multidiff.modalities.base.Adapter)"
            )
        return self.adapter.to_config()

    @classmethod
    def adapter_from_dict(cls, d: Mapping[str, Any] | None, folder: Path) -> nn.Module | None:
        """Rebuild the adapter ``config.json`` describes (one of this pipeline's modality)."""
        if cls.modality is None:
            if d is not None:
                raise ValueError(
                    f"{folder}: {cls.__name__} cannot rebuild an adapter of type {d.get('type')!r}"
                )
            return None
        return load_adapter(None if d is None else dict(d), folder, cls.modality)

    @classmethod
    def init_kwargs_from_config(cls, data: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Extra constructor keywords a subclass reads from ``config.json`` (none here)."""
        return {}

    def config_dict(self) -> dict[str, Any]:
        """Everything ``config.json`` holds."""
        from multidiff.nn.io import config_to_dict

        backbone = self.backbone
        name = type(backbone).__name__
        if name not in backbones():
            raise ValueError(f"cannot save a pipeline with backbone {name}; known: {sorted(backbones())}")
        d = self.denoiser
        return {
            "pipeline": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "backbone": {"type": name, "config": config_to_dict(backbone.config)},
            "denoiser": {
                "prediction": d.prediction,
                "sigma_data": d.sigma_data,
                "schedule": schedule_to_dict(d.schedule),
            },
            "sampling": dataclasses.asdict(self.sampling),
            "labels": self.labels,
            "window": {"length": self.window, "overlap": self.overlap},
            "x0_range": None if self.x0_range is None else [v.tolist() for v in self.x0_range],
            "adapter": self.adapter_to_dict(),
            "text_encoder": text_encoder_to_dict(self.text_encoder),
        }

    def save_pretrained(
        self, directory: str | os.PathLike[str], state_dict: Mapping[str, Tensor] | None = None
    ) -> Path:
        """Write ``config.json`` and ``denoiser.safetensors`` (and adapter files) into ``directory``.

        Args:
            directory: Created if missing.
            state_dict: Denoiser weights to save instead of the current ones (e.g. EMA weights).
        """
        folder = Path(directory)
        if folder_kind(folder) not in (None, "multidiff"):  # never over a diffusers model's config.json
            raise ValueError(f"{folder} holds another model (not a multidiff pipeline); save to a new folder")
        own = {k: tuple(v.shape) for k, v in self.denoiser.state_dict().items()}
        if state_dict is not None and {k: tuple(v.shape) for k, v in state_dict.items()} != own:
            raise ValueError("state_dict must hold the denoiser's keys and shapes (merge LoRA layers first)")
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config_dict()
        (folder / CONFIG_NAME).write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        save_tensors(
            folder / WEIGHTS_NAME, state_dict if state_dict is not None else self.denoiser.state_dict()
        )
        if isinstance(self.adapter, Adapter):  # its component files (a vocoder's weights, a VAE)
            self.adapter.save(folder)
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
        data = read_config(folder)
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
        denoiser = denoiser_from_dict(data, folder, source)
        window = data.get("window") or {}
        pipe = target(
            denoiser,
            target.adapter_from_dict(data.get("adapter"), folder),
            sampling=sampling_from_dict(data["sampling"], source),
            labels=data.get("labels"),
            window=window.get("length"),
            overlap=window.get("overlap"),
            x0_range=None
            if data.get("x0_range") is None
            else tuple(torch.tensor(v) for v in data["x0_range"]),
            text_encoder=text_encoder_from_dict(data.get("text_encoder"), folder),
            **target.init_kwargs_from_config(data, source),
        )
        return pipe.to(device) if device is not None else pipe


def load_pipeline(directory: str | os.PathLike[str], *, device: str | torch.device | None = None) -> Pipeline:
    """Load any saved pipeline (:class:`Pipeline` or the subclass the folder names)."""
    return Pipeline.from_pretrained(directory, device=device)


# The modality pipelines live beside this module; imported here so that ``from multidiff.pipeline import
# AudioPipeline`` keeps working and :func:`load_pipeline` knows every pipeline a folder may name.
from multidiff.pipeline_audio import AudioPipeline, mel_frame_mask  # noqa: E402
from multidiff.pipeline_video import ImagePipeline, VideoPipeline, frame_cond_channels  # noqa: E402
