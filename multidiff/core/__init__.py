"""The σ-space denoising core: schedules, the Denoiser contract, objectives, samplers, guidance, EMA.

Imports torch and einops only (house rule 1).
"""

from multidiff.core import losses, samplers, schedules
from multidiff.core.denoiser import Denoiser, scalings
from multidiff.core.samplers import SAMPLERS, get_sampler
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule, karras

__all__ = [
    "Denoiser",
    "EDMSchedule",
    "FlowSchedule",
    "SAMPLERS",
    "VPSchedule",
    "get_sampler",
    "karras",
    "losses",
    "samplers",
    "scalings",
    "schedules",
]
