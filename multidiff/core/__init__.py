"""The σ-space denoising core: schedules, the Denoiser contract, objectives, samplers, guidance, EMA.

Imports torch and einops only (house rule 1).
"""

from multidiff.core import analytic, ema, guidance, losses, samplers, schedules
from multidiff.core.denoiser import Denoiser, scalings
from multidiff.core.ema import EMA, PowerEMA, posthoc_ema, sigma_rel_to_gamma
from multidiff.core.guidance import autoguidance, cfg, inpaint
from multidiff.core.losses import denoising_loss, loss_weight
from multidiff.core.samplers import SAMPLERS, get_sampler
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule, karras

__all__ = [
    "EMA",
    "SAMPLERS",
    "Denoiser",
    "EDMSchedule",
    "FlowSchedule",
    "PowerEMA",
    "VPSchedule",
    "analytic",
    "autoguidance",
    "cfg",
    "denoising_loss",
    "ema",
    "get_sampler",
    "guidance",
    "inpaint",
    "karras",
    "loss_weight",
    "losses",
    "posthoc_ema",
    "samplers",
    "scalings",
    "schedules",
    "sigma_rel_to_gamma",
]
