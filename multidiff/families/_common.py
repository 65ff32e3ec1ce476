"""What the video families share: reading a diffusers folder's components, the σ grid and initial noise
of its scheduler, guidance as diffusers applies it, and a :class:`FamilyVideoPipeline` that samples with them.

A family pipeline reproduces its diffusers pipeline: the σ grid is the one the folder's scheduler steps
through (:func:`scheduler_grid`), the initial latents are scaled as the scheduler scales them, guidance
combines the unconditional and conditional predictions of one batched call in diffusers' order, and the
sampler is the multidiff algorithm equal to the scheduler's step (Euler in σ for Euler, DDIM with η = 0
and flow-matching Euler). diffusers and transformers are imported inside the functions.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.core.samplers import get_sampler
from multidiff.modalities.base import Extent
from multidiff.modalities.temporal_vae import from_pretrained_filled
from multidiff.pipeline import VideoPipeline

__all__ = [
    "FLOW_T1_SIGMA",
    "FamilyVideoPipeline",
    "GuidedPair",
    "TextToVideoPipeline",
    "family_denoiser",
    "load_component",
    "load_scheduler",
    "read_index",
    "scheduler_grid",
]

#: σ standing in for t = 1 of a flow-matching grid (diffusers starts there). Far above multidiff's default
#: cap: the initial latents are ``noise·(1 + σ)`` so the network sees exactly the noise, and with
#: σ = 1e8 the remaining data term (1e-8 relative) is below float32 resolution, so the first Euler step
#: equals diffusers' to rounding.
FLOW_T1_SIGMA = 1.0e8

#: diffusers scheduler -> the multidiff sampler whose step is the same algorithm.
_SAMPLER_OF: dict[str, str] = {
    "EulerDiscreteScheduler": "euler",
    "DDIMScheduler": "ddim",
    "FlowMatchEulerDiscreteScheduler": "euler",
}


def read_index(folder: Path) -> dict[str, Any]:
    """``folder/model_index.json`` as a dict (ValueError naming the file when unreadable)."""
    index = Path(folder) / "model_index.json"
    try:
        return json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{index} cannot be read ({err})") from None


def load_component(folder: Path, name: str, allowed: Sequence[str] | None = None) -> Any:
    """Load component ``name`` of a diffusers pipeline folder with the class ``model_index.json`` names.

    Models are loaded from local files only and refused when their weights do not fill them (diffusers
    and transformers would leave such weights random and only warn).

    Args:
        folder: The pipeline folder.
        name: The component (``"unet"``, ``"vae"``, ``"text_encoder"``, ``"tokenizer"``, ...).
        allowed: Class names the family supports for it (None: any).

    Raises:
        ValueError: The component is missing, of an unsupported class, or its weights do not fit.
    """
    index = read_index(folder)
    entry = index.get(name)
    source = Path(folder) / "model_index.json"
    if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
        raise ValueError(f"{source} names no {name!r} component, which this family needs")
    library, cls_name = str(entry[0]), str(entry[1])
    if allowed is not None and cls_name not in allowed:
        raise ValueError(
            f"{source}: component {name!r} is a {cls_name}; this family supports {', '.join(allowed)}"
        )
    if library not in ("diffusers", "transformers"):
        raise ValueError(
            f"{source}: component {name!r} comes from {library!r}; only diffusers/transformers load"
        )
    path = Path(folder) / name
    if not path.is_dir():
        raise ValueError(f"{path} does not exist (component {name!r} of {source})")
    cls = getattr(importlib.import_module(library), cls_name, None)
    if cls is None:
        raise ValueError(f"{source}: {library} has no class {cls_name} (component {name!r})")
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        try:
            return cls.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: could not load a {cls_name} ({err})") from err
    return from_pretrained_filled(cls, path, does="run")


def load_scheduler(folder: Path, allowed: Sequence[str] | None = None) -> Any:
    """The folder's scheduler, refused (naming the setting) where multidiff cannot reproduce its steps."""
    sched = load_component(folder, "scheduler", allowed or tuple(_SAMPLER_OF))
    name, cfg = type(sched).__name__, sched.config
    source = Path(folder) / "scheduler" / "scheduler_config.json"
    bad: list[tuple[str, Any]] = []
    if getattr(cfg, "thresholding", False):
        bad.append(("thresholding", True))
    if name == "DDIMScheduler" and cfg.clip_sample:
        bad.append(("clip_sample", True))
    if name == "DDIMScheduler" and cfg.timestep_spacing == "linspace":
        # its step goes from t to t - T // N, which with linspace spacing is not the next timestep of its grid
        bad.append(("timestep_spacing", "linspace"))
    if name == "FlowMatchEulerDiscreteScheduler" and getattr(cfg, "stochastic_sampling", False):
        bad.append(("stochastic_sampling", True))
    if name == "FlowMatchEulerDiscreteScheduler" and getattr(cfg, "invert_sigmas", False):
        bad.append(("invert_sigmas", True))
    if name == "EulerDiscreteScheduler" and cfg.prediction_type not in ("epsilon", "v_prediction"):
        bad.append(("prediction_type", cfg.prediction_type))
    if bad:
        key, value = bad[0]
        hint = (
            "timestep_spacing 'leading', or 'trailing' with a step count that divides num_train_timesteps, or "
            "EulerDiscreteScheduler, which follows any spacing; samples differ from this scheduler's"
            if key == "timestep_spacing"
            else "or use another scheduler"
        )
        raise ValueError(
            f"{source}: {name} with {key}={value!r} is not reproduced by multidiff's samplers "
            f"(edit the setting in that file: {hint})"
        )
    return sched


def sampler_for(scheduler: Any) -> str:
    """The multidiff sampler name equal to ``scheduler``'s step."""
    return _SAMPLER_OF[type(scheduler).__name__]


def scheduler_grid(scheduler: Any, steps: int, **set_timesteps: Any) -> tuple[Tensor, float, float]:
    """The σ grid ``scheduler`` steps through, and how its latents relate to multidiff's unscaled ones.

    The grid is :func:`~multidiff.interop.diffusers.sigmas_from_scheduler`'s (``set_timesteps``, when given,
    is the pipeline's own call, e.g. LTX's ``sigmas`` and ``mu``), with a flow time of 1 at σ =
    :data:`FLOW_T1_SIGMA`; the scaling is :func:`~multidiff.interop.diffusers.scheduler_scaling`'s.

    Returns:
        ``(sigmas, init, final)``: the float64 grid ``[steps + 1]`` in σ; ``init`` such that multidiff's
        initial latents are ``noise · init`` when diffusers' are ``noise · init_noise_sigma``; ``final``
        such that diffusers' output latents are multidiff's times ``final`` (1 unless a VP grid ends above
        σ = 0, where diffusers returns the scaled state).
    """
    from multidiff.interop.diffusers import scheduler_scaling, sigmas_from_scheduler

    name = type(scheduler).__name__
    if name not in _SAMPLER_OF:
        raise ValueError(f"scheduler {name} has no multidiff grid here; supported: {', '.join(_SAMPLER_OF)}")
    sigmas = sigmas_from_scheduler(scheduler, steps, flow_cap=FLOW_T1_SIGMA, **set_timesteps)
    return (sigmas, *scheduler_scaling(scheduler, sigmas))


def family_denoiser(backbone: nn.Module, scheduler: Any) -> Denoiser:
    """``backbone`` as a :class:`Denoiser` with the prediction type and noise schedule of ``scheduler``'s
    config (:func:`~multidiff.interop.diffusers.prediction_from_config`, ``schedule_from_config``)."""
    from multidiff.interop.diffusers import prediction_from_config, schedule_from_config

    name = type(scheduler).__name__
    return Denoiser(
        backbone,
        prediction=prediction_from_config(scheduler.config, name),  # type: ignore[arg-type]
        schedule=schedule_from_config(scheduler.config, name),
    )


class GuidedPair:
    """Classifier-free guidance as diffusers' pipelines apply it: one call on ``[uncond; cond]``, then
    ``u + scale · (c - u)`` (Ho & Salimans 2022). The combination is taken on x0; since x0 is affine in the
    network output with the same coefficients for both halves, it equals diffusers' combination on ε, v or
    velocity exactly (up to rounding).

    Args:
        denoiser: ``D(x, σ, **cond)``.
        scale: A number, or a tensor broadcastable to x (e.g. per frame ``[1, 1, F, 1, 1]``).
        uncond: The unconditional value of each guided keyword (batch 1 or B).
    """

    def __init__(self, denoiser: Callable[..., Tensor], scale: float | Tensor, uncond: Mapping[str, Any]):
        self.denoiser = denoiser
        self.scale = scale
        self.uncond = dict(uncond)

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        b = x.shape[0]
        both: dict[str, Any] = {}
        for key, value in cond.items():
            if key in self.uncond:
                u = torch.as_tensor(self.uncond[key], device=x.device)
                both[key] = torch.cat([u.expand(b, *u.shape[1:]).to(value.dtype), value])
            elif isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == b:
                both[key] = torch.cat([value, value])
            else:
                both[key] = value
        missing = sorted(set(self.uncond) - set(cond))
        if missing:
            raise ValueError(f"guidance has unconditional values for {missing} but no conditional ones")
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **both)
        u, c = out.float().chunk(2)
        return (u + self.scale * (c - u)).to(x.dtype)


class FamilyVideoPipeline(VideoPipeline):
    """A :class:`VideoPipeline` over a pretrained family loaded from a diffusers folder.

    Sampling follows the folder's scheduler (:meth:`sample_family`); the adapter is the family's VAE.
    The pipeline is rebuilt from the diffusers folder, so :meth:`save_pretrained` refuses.

    Args:
        denoiser: The family's model as a multidiff Denoiser.
        adapter: The family's VAE adapter.
        scheduler: The folder's diffusers scheduler (used for its σ grid only).
        folder: The diffusers folder it came from.
        size: Default frame size ``(H, W)``.
        frames: Default number of frames.
    """

    family: ClassVar[str] = ""

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module,
        *,
        scheduler: Any,
        folder: Path,
        size: tuple[int, int] | None = None,
        frames: int | None = None,
    ) -> None:
        super().__init__(denoiser, adapter, size=size)
        self.scheduler = scheduler
        self.folder = Path(folder)
        self.frames = frames
        self.sampler_name = sampler_for(scheduler)

    def default_extent(self):  # type: ignore[override]
        return Extent(frames=self.frames, size=self.size)

    def extent(self, frames: int | None, size: int | Sequence[int] | None) -> Extent:
        """``Extent(frames, (H, W))`` with the pipeline's defaults for None; an int size is square."""
        frames = self.frames if frames is None else int(frames)
        if size is None:
            size = self.size
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)  # type: ignore[union-attr]
        return Extent(frames=frames, size=size)  # type: ignore[arg-type]

    def generators(self, num: int, seed: int | Sequence[int] | None) -> list[torch.Generator]:
        """One CPU generator per sample, seeded as :meth:`seeds` says (diffusers' list of generators)."""
        return [torch.Generator().manual_seed(s) for s in self.seeds(num, seed)]

    def grid(self, steps: int, shape: Sequence[int]) -> tuple[Tensor, float, float]:
        """The σ grid of ``steps`` steps for latents of ``shape`` (see :func:`scheduler_grid`)."""
        return scheduler_grid(self.scheduler, steps)

    def sigmas(self, steps: int | None = None, grid: str | None = None) -> Tensor:
        """The scheduler's σ grid (other grids would not reproduce the family's pipeline)."""
        if grid not in (None, "default"):
            raise ValueError(f"{self.family} pipelines sample on their scheduler's grid; got grid={grid!r}")
        return self.grid(self.sampling.steps if steps is None else steps, ())[0]

    def draw_noise(self, gens: Sequence[torch.Generator], shape: Sequence[int]) -> Tensor:
        """Standard normal latent noise ``[B, *shape]``, sample k from ``gens[k]`` in diffusers' layout
        (``[C, F, h, w]`` unless a family overrides it), so a seed gives diffusers' latents."""
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens])

    @torch.no_grad()
    def sample_family(
        self,
        shape: Sequence[int],
        cond: Mapping[str, Any],
        uncond: Mapping[str, Any] | None,
        guidance: float | Tensor,
        *,
        steps: int,
        gens: Sequence[torch.Generator] | None = None,
        noise: Tensor | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> Tensor:
        """Sample latents ``[B, *shape]`` on the scheduler's grid from ``noise`` (or noise drawn from
        ``gens``), guided by ``guidance`` against ``uncond`` when given.

        Returns:
            The final latents as diffusers' pipeline returns them (``output_type="latent"``), in
            multidiff's ``[B, C, F, h, w]`` layout.
        """
        sigmas, init, final = self.grid(steps, shape)
        if noise is None:
            if gens is None:
                raise ValueError("pass noise= or generators")
            noise = self.draw_noise(gens, shape)
        noise = torch.as_tensor(noise, dtype=torch.float32)
        if tuple(noise.shape[1:]) != tuple(shape):
            raise ValueError(f"noise must be [B, {', '.join(map(str, shape))}], got {tuple(noise.shape)}")
        device = self.device
        x = noise.to(device) * init
        d: Callable[..., Tensor] = self.denoiser
        if uncond is not None:
            d = GuidedPair(d, guidance, uncond)
        x = get_sampler(self.sampler_name)(d, x, sigmas, cond=dict(cond), callback=callback)
        return x.float() * final

    def save_pretrained(self, directory: Any, state_dict: Any = None) -> Path:  # type: ignore[override]
        raise ValueError(
            f"a {self.family} pipeline is not saved as a multidiff folder: load it again from its diffusers "
            f"folder {self.folder} with multidiff.families.load_family"
        )


class TextToVideoPipeline(FamilyVideoPipeline):
    """A :class:`FamilyVideoPipeline` prompted with text: it holds the family's text model and tokenizer,
    batches prompts as diffusers' text-to-video pipelines do, and decodes :meth:`sample_latents` (which a
    family defines, taking ``(prompt, frames, size, *, num, ...)``) in :meth:`generate`.

    Args:
        text_encoder: The family's text model (moved by :meth:`to`).
        tokenizer: Its tokenizer.
        **kw: As :class:`FamilyVideoPipeline`.
    """

    def __init__(
        self, denoiser: Denoiser, adapter: nn.Module, *, text_encoder: nn.Module, tokenizer: Any, **kw: Any
    ):
        super().__init__(denoiser, adapter, **kw)
        self.text_model = text_encoder
        self.tokenizer = tokenizer

    def to(self, device: str | torch.device) -> TextToVideoPipeline:
        """Move the models (the text model too); returns self."""
        super().to(device)
        self.text_model.to(device)
        return self

    @staticmethod
    def prompts(
        prompt: str | Sequence[str], negative_prompt: str | Sequence[str], num: int | None, guided: bool
    ) -> tuple[list[str], list[str] | None]:
        """``(prompts, negative prompts or None when not guided)``, one of each per video: a single prompt
        (or negative prompt string) serves all ``num`` videos; ``num`` defaults to the number of prompts."""
        prompts = [prompt] if isinstance(prompt, str) else [str(p) for p in prompt]
        num = len(prompts) if num is None else int(num)
        if len(prompts) == 1:
            prompts = prompts * num
        if len(prompts) != num:
            raise ValueError(f"got {len(prompts)} prompts for {num} videos")
        if not guided:
            return prompts, None
        negs = [negative_prompt] * num if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negs) != num:
            raise ValueError(f"got {len(negs)} negative prompts for {num} videos")
        return prompts, negs

    @torch.no_grad()
    def generate(  # type: ignore[override]
        self,
        num: int,
        frames: int | None = None,
        size: int | Sequence[int] | None = None,
        *,
        prompt: str | Sequence[str],
        decode_chunk: int | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """uint8 frames ``[B, F, H, W, 3]``: :meth:`sample_latents` (same keywords), then the VAE
        (``decode_chunk`` frames per call where the VAE decodes in chunks; :meth:`decode_latents`)."""
        if kwargs.get("seed") is None:  # one base seed for the sampling noise and what decoding draws
            kwargs["seed"] = self.seeds(1, None)[0]
        latents = self.sample_latents(prompt, frames, size, num=num, **kwargs)  # type: ignore[attr-defined]
        return self.decode_latents(latents, decode_chunk, kwargs["seed"], kwargs.get("noise"))

    def decode_latents(
        self, latents: Tensor, decode_chunk: int | None, seed: int | Sequence[int], noise: Tensor | None
    ) -> Tensor:
        """The VAE's uint8 frames of ``latents``; ``seed`` and ``noise`` (the sampling's) are for a family
        whose decoding draws noise too (LTX)."""
        return self.adapter.decode(latents, chunk_frames=decode_chunk, out_device="cpu")  # type: ignore[union-attr]
