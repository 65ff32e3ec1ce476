"""Training objective: a σ distribution, a loss weighting, and the per-sample denoising loss.

Every loss is written in x0 space, L = λ(σ)·‖D(x0 + σ·n, σ) - x0‖², whatever the network predicts:
an ε-, v- or velocity-loss is the x0 loss times a known factor of σ, so the weightings below carry those
factors and no loss branches on the prediction type (Karras et al. 2022, Sec. 5, Eq. 8).

=================  =================================  ===============================================
weighting          λ(σ) in x0 space                   equivalent to
=================  =================================  ===============================================
``edm``            (σ² + σ_d²)/(σ·σ_d)²               EDM (Karras et al. 2022, Table 1)
``snr``            1/σ²                               ‖ε - ε̂‖² (Ho et al. 2020)
``v``              (1 + σ²)/σ²                        ‖v - v̂‖² (Salimans & Ho 2022)
``flow``           ((1 + σ)/σ)²                       ‖u - û‖², u = n - x0 (rectified flow)
``min_snr``        min(1/σ², γ)                       Min-SNR-γ (Hang et al. 2023), ε or v form alike
``soft_min_snr``   1/(σ² + σ_d²)                      soft-min-SNR (Crowson et al. 2024, HDiT, Sec. 3)
``uniform``        1                                  ‖x0 - x̂0‖²
=================  =================================  ===============================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from multidiff.core.denoiser import append_dims
from multidiff.core.schedules import EDMSchedule, FlowSchedule, Schedule, VPSchedule

__all__ = [
    "SigmaDistribution",
    "LogNormal",
    "LogitNormal",
    "LogUniform",
    "CosineTime",
    "DiscreteUniform",
    "WEIGHTINGS",
    "Weighting",
    "loss_weight",
    "UncertaintyWeight",
    "denoising_loss",
    "default_objective",
]


def _uniform(batch: int, device, generator: torch.Generator | None, stratified: bool) -> Tensor:
    """u ~ U(0, 1) [B]; stratified: one draw in each of B equal bins, in random order."""
    u = torch.rand(batch, device=device, generator=generator, dtype=torch.float64)
    if not stratified:
        return u
    perm = torch.randperm(batch, device=device, generator=generator)
    return (perm.to(torch.float64) + u) / batch


class SigmaDistribution:
    """Distribution of training noise levels; ``sample(batch, device, generator) -> σ`` float32 [B]."""

    stratified: bool

    def icdf(self, u: Tensor) -> Tensor:
        """σ at quantile u (float64)."""
        raise NotImplementedError

    def sample(self, batch: int, device=None, generator: torch.Generator | None = None) -> Tensor:
        return self.icdf(_uniform(batch, device, generator, self.stratified)).float()


def _ndtri(u: Tensor) -> Tensor:
    return math.sqrt(2) * torch.erfinv(2 * u.clamp(1e-12, 1 - 1e-12) - 1)


@dataclass(frozen=True)
class LogNormal(SigmaDistribution):
    """ln σ ~ N(P_mean, P_std²) (EDM, Karras et al. 2022, Sec. 5: P_mean = -1.2, P_std = 1.2)."""

    mean: float = -1.2
    std: float = 1.2
    stratified: bool = False

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def icdf(self, u: Tensor) -> Tensor:
        return (self.mean + self.std * _ndtri(u)).exp()


@dataclass(frozen=True)
class LogitNormal(SigmaDistribution):
    """Flow time t = sigmoid(N(mean, std²)), σ = t/(1 - t) (SD3, Esser et al. 2024, Sec. 3.1)."""

    mean: float = 0.0
    std: float = 1.0
    stratified: bool = False

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def icdf(self, u: Tensor) -> Tensor:
        return (self.mean + self.std * _ndtri(u)).exp()  # σ = t/(1 - t) = e^{logit t}


@dataclass(frozen=True)
class LogUniform(SigmaDistribution):
    """ln σ ~ U(ln σ_min, ln σ_max)."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    stratified: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def icdf(self, u: Tensor) -> Tensor:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return (lo + (hi - lo) * u).exp()


@dataclass(frozen=True)
class CosineTime(SigmaDistribution):
    """The cosine schedule's time t ~ U(t(σ_min), t(σ_max)), σ = tan(πt/2), so α = cos(πt/2) and the VP noise
    level sin(πt/2) (Nichol & Dhariwal 2021 without the offset; the v-objective of Salimans & Ho 2022); t is
    Stable Audio Open's noise input (2/π)·atan σ (Evans et al. 2024)."""

    sigma_min: float = 0.3
    sigma_max: float = 500.0
    stratified: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def icdf(self, u: Tensor) -> Tensor:
        lo, hi = (math.atan(s) * 2 / math.pi for s in (self.sigma_min, self.sigma_max))
        return torch.tan((lo + (hi - lo) * u.double()) * (math.pi / 2))


@dataclass(frozen=True)
class DiscreteUniform(SigmaDistribution):
    """t ~ U{0, …, N-1} over a discrete VP schedule's table (DDPM, Ho et al. 2020, Algorithm 1)."""

    schedule: VPSchedule = VPSchedule()
    stratified: bool = False

    def icdf(self, u: Tensor) -> Tensor:
        n = self.schedule.num_train_timesteps
        t = (u * n).floor().clamp(0, n - 1)
        return self.schedule.t_to_sigma(t)


Weighting = Literal["edm", "snr", "v", "flow", "min_snr", "soft_min_snr", "uniform"]
WEIGHTINGS: tuple[str, ...] = ("edm", "snr", "v", "flow", "min_snr", "soft_min_snr", "uniform")


def loss_weight(weighting: str, sigma: Tensor, sigma_data: float = 0.5, gamma: float = 5.0) -> Tensor:
    """λ(σ) in x0 space for a named weighting (see the module table). σ [B] -> [B], float32."""
    sigma = sigma.float()
    if weighting == "edm":
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    if weighting == "snr":
        return sigma.pow(-2)
    if weighting == "v":
        return (1 + sigma**2) / sigma**2
    if weighting == "flow":
        return ((1 + sigma) / sigma) ** 2
    if weighting == "min_snr":
        return sigma.pow(-2).clamp(max=gamma)
    if weighting == "soft_min_snr":
        return 1 / (sigma**2 + sigma_data**2)
    if weighting == "uniform":
        return torch.ones_like(sigma)
    raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")


class UncertaintyWeight(nn.Module):
    """EDM2's learned uncertainty u(σ) (Karras et al. 2024, "Analyzing and Improving the Training Dynamics",
    Sec. 5 and Eq. 21): L = λ(σ)·‖D - x0‖²/e^{u(σ)} + u(σ), with u a linear layer on Fourier features of
    c_noise = ln(σ)/4. Zero-initialised, so training starts from the fixed weighting.
    """

    def __init__(self, features: int = 128) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(features // 2), persistent=True)
        self.register_buffer("phases", torch.rand(features // 2), persistent=True)
        self.linear = nn.Linear(features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, sigma: Tensor) -> Tensor:
        c = sigma.float().log()[:, None] / 4  # (B, 1)
        arg = 2 * math.pi * (c * self.freqs + self.phases)  # (B, D/2)
        feats = torch.cat([arg.cos(), arg.sin()], dim=1) * math.sqrt(2)  # (B, D)
        return self.linear(feats).squeeze(1)  # (B,)


def denoising_loss(
    denoiser: Callable[..., Tensor],
    x0: Tensor,
    sigma_dist: SigmaDistribution,
    *,
    weighting: str = "edm",
    sigma_data: float = 0.5,
    gamma: float = 5.0,
    uncertainty: UncertaintyWeight | None = None,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    cond: dict | None = None,
    sigma: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Weighted denoising loss per sample (Karras et al. 2022, Eq. 8), in x0 space.

    Args:
        denoiser: ``D(x, sigma, **cond) -> x0_hat``.
        x0: clean data [B, ...].
        sigma_dist: training distribution of σ.
        weighting: a name from :data:`WEIGHTINGS`.
        sigma_data: σ_d for the ``edm`` and ``soft_min_snr`` weightings.
        gamma: γ of ``min_snr``.
        uncertainty: optional EDM2 learned uncertainty; its parameters train with the model.
        generator: RNG for σ and the noise.
        mask: optional [B, ...] weights broadcastable to x0 (e.g. a padding mask); the error is averaged over
            the masked elements only.
        cond: conditioning keywords for the denoiser.
        sigma: optional σ [B] to use instead of drawing from ``sigma_dist`` (e.g. drawn with one seed
            per sample, so the loss does not depend on how a batch is split).
        noise: optional standard normal noise shaped like x0, used instead of drawing it.

    Returns:
        loss [B], float32.
    """
    b = x0.shape[0]
    if sigma is None:
        sigma = sigma_dist.sample(b, device=x0.device, generator=generator)  # (B,)
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    x = x0 + append_dims(sigma, x0.ndim).to(x0.dtype) * noise
    err = (denoiser(x, sigma, **(cond or {})).float() - x0.float()) ** 2  # (B, ...)
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = mask.float().expand_as(err)
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    loss = loss_weight(weighting, sigma, sigma_data, gamma) * mse
    if uncertainty is not None:
        u = uncertainty(sigma)
        loss = loss / u.exp() + u
    return loss


def default_objective(schedule: Schedule, sigma_data: float = 0.5) -> tuple[SigmaDistribution, str]:
    """The customary (σ distribution, weighting) pair for a schedule: EDM log-normal with EDM weighting,
    DDPM's uniform timesteps with the ε (SNR) weighting, SD3's logit-normal with the flow weighting."""
    if isinstance(schedule, VPSchedule):
        return DiscreteUniform(schedule), "snr"
    if isinstance(schedule, FlowSchedule):
        return LogitNormal(), "flow"
    if isinstance(schedule, EDMSchedule):
        return LogNormal(), "edm"
    raise ValueError(f"no default objective for {type(schedule).__name__}")
