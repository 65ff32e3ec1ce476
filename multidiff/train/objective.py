"""Backbone and objective as choices of every train recipe (``--backbone unet|dit``, ``--objective edm|flow|v``).

An objective is the triple a recipe trains with: the :class:`~multidiff.core.denoiser.Denoiser`'s
parametrisation and schedule, the training distribution of σ, and the loss weighting. The three offered:

* ``edm``: EDM preconditioning, ln σ ~ N(P_mean, P_std²), EDM weighting (Karras et al. 2022, Table 1).
* ``flow``: rectified flow (velocity prediction), logit-normal time t, i.e. ln σ = logit t ~ N(m, s²), flow
  weighting (Esser et al. 2024, "Scaling Rectified Flow Transformers", Sec. 3.1 and 5.1).
* ``v``: v-prediction on a cosine VP schedule, uniform discrete timesteps, v weighting (Salimans and Ho 2022,
  "Progressive Distillation", Sec. 4; cosine schedule of Nichol and Dhariwal 2021).

``--p-mean`` / ``--p-std`` set the mean and spread of ln σ for ``edm`` and ``flow`` (the two are the same
statement: a normal distribution over ln σ); ``v`` samples its table uniformly.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from multidiff.core.denoiser import Denoiser
from multidiff.core.losses import DiscreteUniform, LogitNormal, LogNormal, SigmaDistribution
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule
from multidiff.nn.dit import DiT, DiTConfig
from multidiff.nn.unet import UNet, UNetConfig

__all__ = [
    "BACKBONES",
    "OBJECTIVES",
    "Objective",
    "add_model_options",
    "check_model_options",
    "make_backbone",
    "make_objective",
]

BACKBONES = ("unet", "dit")
OBJECTIVES = ("edm", "flow", "v")

# The customary ln σ distribution of each objective: EDM's (-1.2, 1.2), SD3's logit-normal (0, 1).
_LN_SIGMA = {"edm": (-1.2, 1.2), "flow": (0.0, 1.0)}


@dataclass(frozen=True)
class Objective:
    """What a recipe trains with: the denoiser around its backbone, the σ distribution, the weighting."""

    denoiser: Denoiser
    sigma_dist: SigmaDistribution
    weighting: str


def add_model_options(p: argparse.ArgumentParser, *, p_mean: dict[str, float] | None = None) -> None:
    """``--backbone``, ``--objective``, ``--p-mean`` and ``--p-std``.

    Args:
        p: The recipe's parser.
        p_mean: Per-objective defaults of ``--p-mean`` that differ from the customary ones (video: EDM at 0.5).
    """
    means = {**{k: v[0] for k, v in _LN_SIGMA.items()}, **(p_mean or {})}
    p.add_argument("--backbone", default="unet", choices=BACKBONES, help="U-Net or DiT (default: unet)")
    p.add_argument(
        "--objective",
        default="edm",
        choices=OBJECTIVES,
        help="edm (EDM preconditioning, log-normal σ), flow (rectified flow, logit-normal t) or v "
        "(v-prediction, cosine VP schedule); default edm",
    )
    p.add_argument(
        "--p-mean",
        type=float,
        help="mean of ln σ in training (edm and flow); higher trains more at high noise. Default: "
        + ", ".join(f"{k} {v:g}" for k, v in means.items()),
    )
    p.add_argument("--p-std", type=float, help="spread of ln σ in training (default: edm 1.2, flow 1)")
    p.set_defaults(_p_mean_defaults=means)


def check_model_options(args: argparse.Namespace) -> None:
    """Fill the per-objective defaults of ``--p-mean`` / ``--p-std`` and check them (ValueError naming the
    option)."""
    if args.objective == "v" and (args.p_mean is not None or args.p_std is not None):
        raise ValueError("--p-mean/--p-std: the v objective samples its timesteps uniformly; leave them out")
    if args.objective in _LN_SIGMA:
        if args.p_mean is None:
            args.p_mean = args._p_mean_defaults[args.objective]
        if args.p_std is None:
            args.p_std = _LN_SIGMA[args.objective][1]
        if not args.p_std > 0:
            raise ValueError(f"--p-std must be positive, got {args.p_std}")


def make_objective(backbone: nn.Module, args: Any, sigma_data: float = 0.5) -> Objective:
    """The :class:`Objective` of ``args.objective`` around ``backbone`` (after :func:`check_model_options`)."""
    if args.objective == "edm":
        return Objective(
            Denoiser(backbone, prediction="edm", schedule=EDMSchedule(), sigma_data=sigma_data),
            LogNormal(args.p_mean, args.p_std),
            "edm",
        )
    if args.objective == "flow":
        return Objective(
            Denoiser(backbone, prediction="flow", schedule=FlowSchedule(), sigma_data=sigma_data),
            LogitNormal(args.p_mean, args.p_std),
            "flow",
        )
    if args.objective == "v":
        schedule = VPSchedule(beta_schedule="cosine")
        return Objective(
            Denoiser(backbone, prediction="v", schedule=schedule, sigma_data=sigma_data),
            DiscreteUniform(schedule),
            "v",
        )
    raise ValueError(f"--objective must be one of {OBJECTIVES}, got {args.objective!r}")


def make_backbone(kind: str, unet: UNetConfig, dit: DiTConfig, **fields: Any) -> nn.Module:
    """The ``kind`` (``"unet"`` or ``"dit"``) backbone of a preset, with the fields the data and the run
    decide (``in_channels``, ``num_classes``, ``context_dim``, ``cond_channels``, ``fused_kernels``)
    replaced in its config."""
    if kind == "unet":
        return UNet(dataclasses.replace(unet, **fields))
    if kind == "dit":
        return DiT(dataclasses.replace(dit, **fields))
    raise ValueError(f"--backbone must be one of {BACKBONES}, got {kind!r}")
