"""Interoperation with diffusers: their models as multidiff Denoisers, their schedulers driven by ours.

* :func:`schedule_from_config` / :func:`prediction_from_config` read a diffusers scheduler config.
* :func:`from_diffusers` wraps a diffusers model (UNet2DModel, UNet2DConditionModel, DiTTransformer2DModel,
  SD3Transformer2DModel, ...) and its scheduler config into a :class:`~multidiff.core.Denoiser`, so every
  multidiff sampler runs a diffusers checkpoint.
* :func:`sample_with_scheduler` runs a diffusers scheduler's own loop with any multidiff denoiser, and
  :func:`sigmas_from_scheduler` gives the σ grid that loop integrates over, so the two can be compared
  step for step.
* :class:`CosineEDMSchedule` (Stable Audio Open's c_noise = 2/π·atan σ) and :class:`SNRShiftedVPSchedule`
  (CogVideoX's SNR-shifted VP table) are the processes of two diffusers schedulers that multidiff's core
  schedules do not cover; :func:`lcm_denoiser` adds the Latent Consistency Model boundary condition.
* A :class:`DiffusersBackbone` records its model's class and config (:class:`DiffusersBackboneConfig`), so a
  pipeline around it saves and reloads like any other.

diffusers is imported inside the functions that need it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.core.schedules import (
    SIGMA_CAP,
    ContinuousVPSchedule,
    EDMSchedule,
    FlowSchedule,
    Schedule,
    VPSchedule,
    exponential,
    karras,
    terminal_alpha_bar,
)

__all__ = [
    "SUPPORTED_SCHEDULERS",
    "CosineEDMSchedule",
    "DiffusersBackbone",
    "DiffusersBackboneConfig",
    "SNRShiftedVPSchedule",
    "lcm_denoiser",
    "from_diffusers",
    "prediction_from_config",
    "sample_with_scheduler",
    "schedule_from_config",
    "sigmas_from_scheduler",
    "scheduler_scaling",
    "check_ddim_steps",
]

# How each scheduler's `sample` relates to unscaled x, and where its σ comes from:
#   vp_table:  sample = x_t (VP state), σ from alphas_cumprod at the integer timestep
#   vp_sigmas: sample = x_t (VP state), σ = scheduler.sigmas[i]
#   unscaled:  sample = x (unscaled), σ = scheduler.sigmas[step_index]
#   edm:       as unscaled, the model output is EDM's F
#   flow:      sample = (1 - t)·x0 + t·n, t = scheduler.sigmas[i]
SUPPORTED_SCHEDULERS: dict[str, str] = {
    "DDIMScheduler": "vp_table",
    "DDPMScheduler": "vp_table",
    "DPMSolverMultistepScheduler": "vp_sigmas",
    "UniPCMultistepScheduler": "vp_sigmas",
    "EulerDiscreteScheduler": "unscaled",
    "EulerAncestralDiscreteScheduler": "unscaled",
    "HeunDiscreteScheduler": "unscaled",
    "EDMEulerScheduler": "edm",
    "EDMDPMSolverMultistepScheduler": "edm",
    "CosineDPMSolverMultistepScheduler": "edm",
    "CogVideoXDDIMScheduler": "vp_table",
    "LCMScheduler": "vp_table",
    "FlowMatchEulerDiscreteScheduler": "flow",
}

# schedulers whose last step goes to the final ᾱ (``final_alpha_cumprod``) rather than to σ = 0
_FINAL_ALPHA = ("DDIMScheduler", "CogVideoXDDIMScheduler")


@dataclass(frozen=True)
class CosineEDMSchedule(ContinuousVPSchedule):
    """EDM's σ process with Stable Audio Open's noise input c_noise = (2/π)·atan σ (Evans et al. 2024).

    diffusers' ``CosineDPMSolverMultistepScheduler`` (σ in [0.3, 500], σ_data = 1). The input scaling is the
    VP one, s(σ) = 1/√(1+σ²), so that v-prediction with σ_data = 1 (EDM's c_skip, c_out, c_in with a
    negative c_out) is multidiff's ``"v"`` prediction; with ε-prediction (``"edm"``) the scaling is unused.

    Args:
        sigma_min: smallest sampling σ.
        sigma_max: largest sampling σ.
        rho: ρ of the Karras grid.
        sigma_schedule: the default grid, ``"exponential"`` (uniform in log σ, as the scheduler's default)
            or ``"karras"``.
    """

    sigma_min: float = 0.3
    sigma_max: float = 500.0
    sigma_schedule: Literal["exponential", "karras"] = "exponential"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sigma_schedule not in ("exponential", "karras"):
            raise ValueError(f"sigma_schedule must be 'exponential' or 'karras', got {self.sigma_schedule!r}")

    def c_noise(self, sigma: Tensor) -> Tensor:
        return sigma.atan() * (2 / math.pi)

    def default_grid(self, n: int) -> Tensor:
        if self.sigma_schedule == "karras":
            return karras(n, self.sigma_min, self.sigma_max, self.rho)
        return exponential(n, self.sigma_min, self.sigma_max)


@dataclass(frozen=True)
class SNRShiftedVPSchedule(VPSchedule):
    """A VP table whose ᾱ is shifted in SNR by a factor: ᾱ' = ᾱ / (k + (1 - k)·ᾱ), i.e. SNR' = SNR / k.

    CogVideoX's ``snr_shift_scale`` (Yang et al. 2024; diffusers' ``CogVideoXDDIMScheduler``), applied before the
    optional zero-terminal-SNR rescale of Lin et al. (2023), as diffusers does.

    Args:
        snr_shift_scale: k (CogVideoX uses 3.0; 1.0 is the plain table).
        **kwargs: as :class:`~multidiff.core.schedules.VPSchedule`.
    """

    snr_shift_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.snr_shift_scale > 0:
            raise ValueError(f"snr_shift_scale must be positive, got {self.snr_shift_scale}")
        super().__post_init__()

    def alphas_cumprod(self) -> Tensor:
        abar = torch.cumprod(1 - self.betas(), 0)
        k = self.snr_shift_scale
        abar = abar / (k + (1 - k) * abar)
        if not self.zero_terminal_snr:
            return abar
        # Lin et al. 2023, Algorithm 1, on sqrt(ᾱ) of the shifted table (diffusers' order of the two steps)
        r = abar.sqrt()
        r0, rT = r[0].clone(), r[-1].clone()
        abar = ((r - rT) * r0 / (r0 - rT)) ** 2
        abar[-1] = terminal_alpha_bar(float(abar[-2]))
        return abar


_BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


def _kind(scheduler: Any) -> str:
    name = type(scheduler).__name__
    if name not in SUPPORTED_SCHEDULERS:
        raise ValueError(
            f"diffusers scheduler {name} is not supported; supported: {', '.join(SUPPORTED_SCHEDULERS)}"
        )
    if getattr(scheduler.config, "use_flow_sigmas", False):  # DPM-Solver / UniPC on a flow model
        return "flow"
    return SUPPORTED_SCHEDULERS[name]


def _guess_class(config: Mapping[str, Any]) -> str:
    """The scheduler family of a config that does not name its class (``scheduler.config`` omits it)."""
    if config.get("_class_name"):
        return str(config["_class_name"])
    if "beta_start" not in config and "sigma_data" in config:
        return "EDMEulerScheduler"
    if "beta_start" not in config and "shift" in config:
        return "FlowMatchEulerDiscreteScheduler"
    return ""


def schedule_from_config(config: Mapping[str, Any], class_name: str | None = None) -> Schedule:
    """The multidiff schedule for a diffusers scheduler config (``scheduler.config`` or its JSON dict).

    Args:
        config: the scheduler's config.
        class_name: the scheduler class, if ``config`` lacks ``_class_name``.
    """
    name = class_name or _guess_class(config)
    if name == "CosineDPMSolverMultistepScheduler":
        prediction_from_config(config, name)  # refuses what cannot be represented
        return CosineEDMSchedule(
            sigma_min=float(config.get("sigma_min", 0.3)),
            sigma_max=float(config.get("sigma_max", 500.0)),
            rho=float(config.get("rho", 7.0)),
            sigma_schedule=config.get("sigma_schedule", "exponential"),
        )
    if name.startswith("EDM"):
        lo, hi = float(config["sigma_min"]), float(config["sigma_max"])
        if prediction_from_config(config, name) == "v":  # σ_data = 1: v on a VP-scaled input, c_noise ln(σ)/4
            return ContinuousVPSchedule(sigma_min=lo, sigma_max=hi)
        return EDMSchedule(sigma_min=lo, sigma_max=hi, rho=float(config.get("rho", 7.0)))
    if config.get("timestep_type", "discrete") == "continuous":
        # Stable Video Diffusion: EDM's σ range and c_noise = ln(σ)/4, v-prediction on a VP-scaled input
        if config.get("prediction_type") != "v_prediction":
            raise ValueError(
                f"{name or 'the scheduler'}: timestep_type='continuous' is defined only with "
                f"prediction_type='v_prediction' (as diffusers), got {config.get('prediction_type')!r}"
            )
        if config.get("sigma_min") is None or config.get("sigma_max") is None:
            raise ValueError(
                f"{name or 'the scheduler'}: timestep_type='continuous' needs sigma_min and sigma_max"
            )
        return ContinuousVPSchedule(
            sigma_min=float(config["sigma_min"]), sigma_max=float(config["sigma_max"])
        )
    if name.startswith("FlowMatch") or config.get("use_flow_sigmas", False):
        return FlowSchedule(
            shift=float(config.get("shift", 1.0)), timestep_scale=float(config["num_train_timesteps"])
        )
    if config.get("trained_betas") is not None:
        raise ValueError("schedulers with explicit trained_betas are not supported")
    beta = config.get("beta_schedule", "linear")
    if beta not in _BETA_SCHEDULES:
        raise ValueError(f"beta_schedule {beta!r} is not supported; supported: {', '.join(_BETA_SCHEDULES)}")
    zero = bool(config.get("rescale_betas_zero_snr", False))  # its default grid is then "trailing"
    if name == "CogVideoXDDIMScheduler" or config.get("snr_shift_scale") is not None:
        return SNRShiftedVPSchedule(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
            beta_start=float(config.get("beta_start", 0.00085)),
            beta_end=float(config.get("beta_end", 0.012)),
            beta_schedule=_BETA_SCHEDULES[beta],  # type: ignore[arg-type]
            zero_terminal_snr=zero,
            snr_shift_scale=float(config.get("snr_shift_scale", 3.0)),
        )
    return VPSchedule(
        num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
        beta_start=float(config.get("beta_start", 0.0001)),
        beta_end=float(config.get("beta_end", 0.02)),
        beta_schedule=_BETA_SCHEDULES[beta],  # type: ignore[arg-type]
        zero_terminal_snr=zero,
    )


def prediction_from_config(config: Mapping[str, Any], class_name: str | None = None) -> str:
    """multidiff's prediction name for a diffusers scheduler config."""
    name = class_name or _guess_class(config)
    if name.startswith("FlowMatch") or config.get("use_flow_sigmas", False):
        return "flow"
    pred = config.get("prediction_type", "v_prediction" if name.startswith("Cosine") else "epsilon")
    if name.startswith("EDM") or name == "CosineDPMSolverMultistepScheduler":
        if pred == "epsilon":
            return "edm"
        sigma_data = float(config.get("sigma_data", 0.5 if name.startswith("EDM") else 1.0))
        if pred == "v_prediction" and sigma_data == 1.0:
            return "v"  # EDM's v-preconditioning with σ_data = 1 is v-prediction on x/√(1+σ²)
        raise ValueError(
            f"{name}: prediction_type={pred!r} with sigma_data={sigma_data} cannot be represented by "
            "multidiff (supported: 'epsilon' with any sigma_data, 'v_prediction' with sigma_data=1.0)"
        )
    table = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "flow"}
    if pred not in table:
        raise ValueError(f"prediction_type {pred!r} is not supported; supported: {', '.join(table)}")
    return table[pred]


@dataclass(frozen=True)
class DiffusersBackboneConfig:
    """What rebuilds a :class:`DiffusersBackbone`: the diffusers model class and its config.

    Attributes:
        model_class: a model class exported by ``diffusers`` (e.g. ``"UNet2DConditionModel"``); only
            subclasses of ``diffusers.ModelMixin`` are accepted.
        model_config: the model's config (``model.config`` as a dict).
        context_to: the model argument that receives ``context``: ``"encoder_hidden_states"`` (cross
            attention), or ``"class_labels"`` (one pooled embedding per sample, e.g. AudioLDM's CLAP text
            embedding through ``class_embed_type="simple_projection"``: ``context`` is then ``[B, 1, D]``).
        context_dim: the width D of ``context`` a text encoder must give (None: no text conditioning).
    """

    model_class: str
    model_config: dict = field(default_factory=dict)
    context_to: Literal["encoder_hidden_states", "class_labels"] = "encoder_hidden_states"
    context_dim: int | None = None

    def __post_init__(self) -> None:
        if self.context_to not in ("encoder_hidden_states", "class_labels"):
            raise ValueError(
                f"DiffusersBackboneConfig.context_to must be 'encoder_hidden_states' or 'class_labels', "
                f"got {self.context_to!r}"
            )


def _diffusers_model_class(name: str) -> type:
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise ValueError(f"{name!r} is not a diffusers model class (a diffusers.ModelMixin subclass)")
    return cls


def _plain_config(model: nn.Module) -> dict[str, Any]:
    config = dict(getattr(model, "config", {}) or {})
    return {k: v for k, v in config.items() if not k.startswith("_")}


class DiffusersBackbone(nn.Module):
    """Presents a diffusers model with multidiff's backbone signature.

    ``forward(x, c_noise, *, labels=None, context=None, context_mask=None, **kw)`` calls
    ``model(x, timestep=c_noise, class_labels=labels, encoder_hidden_states=context, ...)`` with only the
    keywords the model's forward accepts, and returns its ``.sample``. ``context_mask`` goes to
    ``encoder_attention_mask``; other keywords pass through unchanged. A model that also predicts its
    variance (twice the input channels, as DiT-XL/2) gives its first half. With
    ``context_to="class_labels"`` the context ``[B, 1, D]`` is the model's class embedding input ``[B, D]``.

    Args:
        model: a diffusers model, or a :class:`DiffusersBackboneConfig` to build one (random weights, to be
            loaded; this is how a saved pipeline is rebuilt).
        context_to: see :class:`DiffusersBackboneConfig`.
        context_dim: see :class:`DiffusersBackboneConfig`.
    """

    config_class = DiffusersBackboneConfig

    def __init__(
        self,
        model: nn.Module | DiffusersBackboneConfig,
        *,
        context_to: Literal["encoder_hidden_states", "class_labels"] = "encoder_hidden_states",
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(model, DiffusersBackboneConfig):
            config = model
            model = _diffusers_model_class(config.model_class).from_config(config.model_config)
        else:
            config = DiffusersBackboneConfig(
                type(model).__name__, _plain_config(model), context_to=context_to, context_dim=context_dim
            )
        self.config = config
        self.model = model
        self._accepts = set(inspect.signature(model.forward).parameters)

    def forward(
        self, x: Tensor, c_noise: Tensor, *, labels=None, context=None, context_mask=None, **kw
    ) -> Tensor:
        if self.config.context_to == "class_labels" and context is not None:
            if labels is not None:
                raise ValueError(
                    f"{type(self.model).__name__} takes its text embedding as class_labels; do not also pass labels"
                )
            labels, context, context_mask = context[:, 0], None, None  # (B, 1, D) -> (B, D)
        if self.config.context_to == "class_labels" and "encoder_hidden_states" in self._accepts:
            kw.setdefault("encoder_hidden_states", None)  # AudioLDM's U-Net has no cross-attention input
        named = {
            "class_labels": labels,
            "encoder_hidden_states": context,
            "encoder_attention_mask": context_mask,
        }
        for key, value in named.items():
            if value is None:
                continue
            if key not in self._accepts:
                raise ValueError(f"{type(self.model).__name__} takes no {key} (got a value for it)")
            kw[key] = value
        out = self.model(x, timestep=c_noise, return_dict=False, **kw)  # SD3 takes timestep 4th
        out = out[0] if isinstance(out, tuple) else out
        if out.shape[1] == 2 * x.shape[1]:  # learned variance (DiT, IF): keep the mean prediction
            out = out[:, : x.shape[1]]
        return out


def from_diffusers(
    model: nn.Module, scheduler_config: Mapping[str, Any] | Any, sigma_data: float = 0.5
) -> Denoiser:
    """Wrap a diffusers model and its scheduler (or the scheduler's config) as a Denoiser.

    Args:
        model: a diffusers model taking ``(sample, timestep, ...)`` and returning ``.sample`` (or a
            :class:`DiffusersBackbone` around one).
        scheduler_config: the scheduler it was trained with, or its config dict.
        sigma_data: σ_d, used only for EDM models.
    """
    config = getattr(scheduler_config, "config", scheduler_config)
    name = type(scheduler_config).__name__ if hasattr(scheduler_config, "config") else None
    if isinstance(config, Mapping) and config.get("sigma_data") is not None:
        sigma_data = float(config["sigma_data"])
    backbone = model if isinstance(model, DiffusersBackbone) else DiffusersBackbone(model)
    return Denoiser(
        backbone,
        prediction=prediction_from_config(config, name),  # type: ignore[arg-type]
        schedule=schedule_from_config(config, name),
        sigma_data=sigma_data,
    )


class _LCMBoundary(nn.Module):
    """D_LCM(x, σ) = c_skip(t)·s(σ)·x + c_out(t)·D(x, σ): see :func:`lcm_denoiser`."""

    def __init__(
        self, denoiser: Callable[..., Tensor], schedule: VPSchedule, timestep_scaling: float
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.schedule = schedule
        self.timestep_scaling = float(timestep_scaling)

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        # the integer timestep of σ (rounded: LCM grids sit on the training table)
        t = self.schedule.sigma_to_t(sigma).round().double() * self.timestep_scaling
        sd2 = 0.25  # σ_data = 0.5, fixed in the LCM boundary condition
        c_skip = sd2 / (t**2 + sd2)
        c_out = t / (t**2 + sd2).sqrt()
        scale = self.schedule.scale(sigma.double())  # x_t = s·x in the scheduler's VP space
        shape = (-1,) + (1,) * (x.ndim - 1)
        x0 = self.denoiser(x, sigma, **cond)
        out = (c_skip * scale).reshape(shape) * x.double() + c_out.reshape(shape) * x0.double()
        return out.to(x0.dtype)


def lcm_denoiser(denoiser: Callable[..., Tensor], scheduler_config: Mapping[str, Any] | Any) -> nn.Module:
    """The Latent Consistency Model's denoiser: D's x0 under LCM's boundary condition (Luo et al. 2023, Eq. 9).

    ``D_LCM = c_skip(t)·x_t + c_out(t)·x0`` with ``c_skip = σ_d²/((t·k)² + σ_d²)``, ``c_out = t·k/√((t·k)² +
    σ_d²)``, σ_d = 0.5, k = ``timestep_scaling`` and ``x_t`` the VP state; in unscaled space
    ``x_t = x/√(1+σ²)``. LCM's multistep sampler (Luo et al. 2023, Algorithm 1; diffusers' ``LCMScheduler``)
    is then multidiff's ancestral sampler with all of the next σ drawn fresh,
    ``sample_euler_ancestral(lcm_denoiser(D, config), x, grid, eta=math.inf)``.

    Args:
        denoiser: the multidiff denoiser of the consistency-distilled model.
        scheduler_config: the ``LCMScheduler`` (or its config).
    """
    config = getattr(scheduler_config, "config", scheduler_config)
    schedule = schedule_from_config(config, "LCMScheduler")
    if not isinstance(schedule, VPSchedule):
        raise ValueError("lcm_denoiser needs a discrete VP scheduler config (LCMScheduler)")
    return _LCMBoundary(denoiser, schedule, float(config.get("timestep_scaling", 10.0)))


def _vp_sigma(scheduler: Any, t: Tensor | int) -> float:
    abar = float(scheduler.alphas_cumprod[int(t)])
    if abar == 0:  # zero terminal SNR: the same stand-in as multidiff's VP table
        abar = terminal_alpha_bar(float(scheduler.alphas_cumprod[int(t) - 1]))
    return math.sqrt((1 - abar) / abar)


def check_ddim_steps(scheduler: Any) -> None:
    """Refuse a DDIM whose steps leave its own timesteps (call after ``set_timesteps``).

    diffusers' DDIM steps from t to ``t - T // N`` (T training steps, N steps asked for), which is the next
    of its timesteps only for "leading" spacing, or "trailing" when N divides T; elsewhere ("linspace", or
    "trailing" at other N) each step lands beside the timestep the next model call is told, which no σ
    grid describes. Raises a ValueError naming the spacing and N.
    """
    if type(scheduler).__name__ not in _FINAL_ALPHA:
        return
    t = [int(v) for v in scheduler.timesteps]
    jump = scheduler.config.num_train_timesteps // len(t)
    if [v - jump for v in t[:-1]] != t[1:] or t[-1] - jump >= 0:
        spacing = scheduler.config.timestep_spacing
        fix = "or a step count that divides num_train_timesteps" if spacing == "trailing" else "in its config"
        raise ValueError(
            f"{type(scheduler).__name__} with timestep_spacing={spacing!r} at {len(t)} steps: each step goes "
            f"from t to t - {jump}, off its own timesteps {t[:4]}..., which no σ grid reproduces; use "
            f"timestep_spacing 'leading' {fix}"
        )


def sigmas_from_scheduler(
    scheduler: Any, steps: int, *, flow_cap: float = SIGMA_CAP, **set_timesteps: Any
) -> Tensor:
    """The σ grid (float64 [steps + 1]) that ``scheduler``'s loop with ``steps`` steps integrates over.

    Calls ``scheduler.set_timesteps(steps)``, or ``scheduler.set_timesteps(**set_timesteps)`` when given
    (diffusers' pipelines pass their own arguments, e.g. LTX's ``sigmas`` and ``mu``, which fix the step
    count). For DDIM the last value is the σ of its final ᾱ (0 when ``set_alpha_to_one``); a DDIM whose steps
    leave its own timesteps is refused (:func:`check_ddim_steps`). Heun-type schedulers repeat σ values
    internally; the grid lists each once. A flow time t becomes σ = t / (1 - t), at most ``flow_cap``.
    """
    kind = _kind(scheduler)
    if set_timesteps:
        scheduler.set_timesteps(**set_timesteps)
    else:
        scheduler.set_timesteps(steps)
    check_ddim_steps(scheduler)
    if kind == "vp_table":
        sig = [_vp_sigma(scheduler, t) for t in scheduler.timesteps]
        if type(scheduler).__name__ in _FINAL_ALPHA:
            final = float(scheduler.final_alpha_cumprod)
            sig.append(math.sqrt((1 - final) / final))
        else:
            sig.append(0.0)
        return torch.tensor(sig, dtype=torch.float64)
    s = scheduler.sigmas.to(torch.float64)
    s = torch.unique_consecutive(s)
    if kind == "flow":
        t = s.clamp(max=flow_cap / (1 + flow_cap))
        s = t / (1 - t)
    return s


def scheduler_scaling(scheduler: Any, sigmas: Tensor) -> tuple[float, float]:
    """How ``scheduler``'s latents relate to multidiff's unscaled ones on its grid ``sigmas``
    (:func:`sigmas_from_scheduler`).

    Returns:
        ``(init, final)``: multidiff's initial latents are ``noise · init`` when diffusers' are
        ``noise · init_noise_sigma`` in the scheduler's own space (a VP state x / √(1 + σ²), a flow state
        x / (1 + σ), or x itself); diffusers' last latents are multidiff's times ``final``, 1 unless the grid
        ends above σ = 0 (DDIM without ``set_alpha_to_one``), where diffusers returns the scaled state.
    """
    kind = _kind(scheduler)
    first, last = float(sigmas[0]), float(sigmas[-1])
    # init_noise_sigma from the grid's first σ, not read from the scheduler: it follows the scheduler's last
    # set_timesteps, and the grid may be another (a caller's sigmas=, a multidiff grid)
    if kind in ("vp_table", "vp_sigmas"):  # init_noise_sigma 1: the VP state x / √(1 + σ²)
        return math.sqrt(1 + first**2), 1 / math.sqrt(1 + last**2)
    if kind == "flow":  # init_noise_sigma 1: the flow state x / (1 + σ)
        return 1 + first, 1 / (1 + last)
    if kind == "unscaled" and scheduler.config.get("timestep_spacing", "linspace") in ("linspace", "trailing"):
        return first, 1.0  # init_noise_sigma = σ_max
    return math.sqrt(first**2 + 1), 1.0  # "leading" spacing and the EDM schedulers: √(σ_max² + 1)


@torch.no_grad()
def sample_with_scheduler(
    denoiser: Callable[..., Tensor],
    scheduler: Any,
    noise: Tensor,
    steps: int,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Run a diffusers scheduler's loop with a multidiff denoiser ``D(x, σ, **cond) -> x0_hat``.

    Each model call is answered by converting D's x0_hat into what the scheduler expects (ε, v, x0,
    EDM's F or a flow velocity, from ``scheduler.config.prediction_type``).

    Args:
        denoiser: a multidiff denoiser.
        scheduler: a diffusers scheduler of a class in :data:`SUPPORTED_SCHEDULERS`; it is reset here.
        noise: standard normal noise [B, ...]; it is scaled by ``scheduler.init_noise_sigma``.
        steps: number of inference steps.
        cond: conditioning keywords for the denoiser.
        generator: passed to the scheduler's step (ancestral schedulers).
        callback: called with ``{"i", "x", "sigma"}`` after each scheduler step.

    Returns:
        the scheduler's final sample.
    """
    kind = _kind(scheduler)
    pred = getattr(scheduler.config, "prediction_type", "epsilon")
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    step_kw = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    scale_input = getattr(scheduler, "scale_model_input", lambda sample, t: sample)
    for i, t in enumerate(scheduler.timesteps):
        x_in = scale_input(x, t)
        if kind == "vp_table":
            sigma = _vp_sigma(scheduler, t)
        elif kind == "vp_sigmas":
            sigma = float(scheduler.sigmas[i])
        elif kind == "flow":
            sigma = float(scheduler.sigmas[i if scheduler.step_index is None else scheduler.step_index])
        else:
            sigma = float(scheduler.sigmas[scheduler.step_index])
        out = _model_output(denoiser, kind, pred, x, x_in, sigma, scheduler, cond)
        x = scheduler.step(out, t, x, return_dict=False, **step_kw)[0]
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma})
    return x


def _model_output(denoiser, kind, pred, x, x_in, sigma, scheduler, cond) -> Tensor:
    """What the scheduler expects from its model, given D's x0_hat at σ."""
    b = x.shape[0]
    if kind == "flow":
        t = sigma
        t_eff = min(t, SIGMA_CAP / (1 + SIGMA_CAP))
        s_ours = t_eff / (1 - t_eff)
        x0 = denoiser(
            x_in / (1 - t_eff), torch.full((b,), s_ours, device=x.device, dtype=torch.float32), **(cond or {})
        )
        return (x_in - x0) / t  # velocity u = n - x0 = (x_t - x0)/t
    if kind == "edm":
        x0 = denoiser(x, torch.full((b,), sigma, device=x.device, dtype=torch.float32), **(cond or {}))
        sd = float(scheduler.config.sigma_data)
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / math.sqrt(sigma**2 + sd**2) * (-1 if pred == "v_prediction" else 1)
        return (x0 - c_skip * x) / c_out
    a = 1 / math.sqrt(1 + sigma**2)  # sqrt(ᾱ)
    bb = sigma * a  # sqrt(1 - ᾱ)
    x_t = x_in if kind != "unscaled" else x * a
    x0 = denoiser(x_t / a, torch.full((b,), sigma, device=x.device, dtype=torch.float32), **(cond or {}))
    if pred == "sample":
        return x0
    eps = (x_t - a * x0) / bb
    if pred == "epsilon":
        return eps
    if pred == "v_prediction":
        return a * eps - bb * x0
    raise ValueError(f"prediction_type {pred!r} is not supported by sample_with_scheduler")
