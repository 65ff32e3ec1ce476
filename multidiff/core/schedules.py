"""Noise processes expressed in σ, and step grids.

Every process is written as ``x = x0 + σ·n`` in *unscaled* space (Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models", EDM, Sec. 2). A schedule only knows

* how the network's own state relates to the unscaled one: ``x_net = scale(σ) · x``
  (VP: ``s = 1/sqrt(1+σ²)``, rectified flow: ``s = 1/(1+σ)``, VE/EDM: ``s = 1``);
* what the network is told about the noise level: ``c_noise(σ)`` (a fractional timestep for discrete VP
  models, ``1000·t`` for flow models, ``ln(σ)/4`` for EDM);
* its σ range, and its natural step grid.

Grids are plain 1-D float64 tensors on the host, ``n + 1`` strictly decreasing values ending in 0, so
any sampler runs on any grid.

Infinite σ cannot be represented in unscaled space: the zero-terminal-SNR end of a VP table gets
ᾱ = :data:`ZTSNR_ALPHA_BAR` (σ ≈ 4096, as diffusers does), and the t = 1 end of rectified flow is capped
at :data:`SIGMA_CAP` (SNR 1e-8). There the data term in ``x`` is far below float32 resolution, so the cap
changes no sample in practice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

#: Largest σ a schedule reports; stands in for σ = ∞ (SNR = 1/σ² = 1e-8).
SIGMA_CAP = 1.0e4

#: ᾱ of the last timestep of a zero-terminal-SNR VP table (σ ≈ 4096). diffusers' σ-based schedulers
#: (Euler, DPM-Solver, UniPC) use the same value, so their first σ maps to timestep N - 1 exactly.
ZTSNR_ALPHA_BAR = 2.0**-24


def terminal_alpha_bar(previous: float) -> float:
    """The ᾱ standing in for 0 at the end of a zero-terminal-SNR table, given the ᾱ before it.

    :data:`ZTSNR_ALPHA_BAR`, or half of ``previous`` when that is smaller (linear betas rescaled
    by Lin et al. reach ᾱ < 2^-24 before the end), so that σ keeps increasing along the table.
    """
    return min(ZTSNR_ALPHA_BAR, previous / 2)


__all__ = [
    "SIGMA_CAP",
    "ZTSNR_ALPHA_BAR",
    "terminal_alpha_bar",
    "Schedule",
    "VPSchedule",
    "EDMSchedule",
    "ContinuousVPSchedule",
    "FlowSchedule",
    "karras",
    "exponential",
    "polyexponential",
    "uniform_t",
    "trailing",
    "leading",
    "flow_shift",
    "append_zero",
]


def append_zero(sigmas: Tensor) -> Tensor:
    """Append the terminal σ = 0 to a grid."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of steps must be a positive int, got {n!r}")


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not (0.0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


# ---------------------------------------------------------------------------------------------------
# Grids that need only a σ range
# ---------------------------------------------------------------------------------------------------


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 grid (EDM, Eq. 5): σ_i = (σ_max^(1/ρ) + i/(n-1)·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ.

    Returns:
        float64 tensor [n + 1]: n noise levels from σ_max down to σ_min, then 0.
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Grid uniform in log σ (the "exponential" schedule of k-diffusion / DPM-Solver's logSNR-uniform grid).

    Returns:
        float64 tensor [n + 1], ending in 0.
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """Grid with log σ polynomial in the step index (ρ = 1 gives :func:`exponential`).

    Returns:
        float64 tensor [n + 1], ending in 0.
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    return append_zero((ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)).exp())


def flow_shift(n: int, shift: float = 1.0, t_min: float = 1e-3, sigma_max: float = SIGMA_CAP) -> Tensor:
    """Rectified-flow grid: t uniform on [1, t_min], shifted as in SD3 (Esser et al. 2024, Sec. 5.3.2), then 0.

    t' = shift·t / (1 + (shift - 1)·t), and σ = t'/(1 - t'). The first point (t = 1, σ = ∞) is capped at
    ``sigma_max``. With shift = 1 and t_min = 1/1000 this is diffusers' FlowMatchEulerDiscreteScheduler
    grid; for other shifts diffusers starts its linspace at the *shifted* t_min (pass
    ``t_min = shift·0.001/(1 + (shift - 1)·0.001)`` to reproduce it).

    Returns:
        float64 tensor [n + 1], ending in 0.
    """
    _check_n(n)
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    if not 0 < t_min < 1:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
    t = torch.linspace(1, t_min, n, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    sigmas = (t / (1 - t).clamp_min(1.0 / (1.0 + sigma_max))).clamp_max(sigma_max)
    return append_zero(sigmas)


# ---------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------


class Schedule:
    """What every noise process provides; see the module docstring."""

    sigma_min: float
    sigma_max: float

    def scale(self, sigma: Tensor) -> Tensor:
        """Factor s(σ) from unscaled x to the network's state: x_net = s(σ)·x."""
        raise NotImplementedError

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The noise-level input of the network for σ."""
        raise NotImplementedError

    def default_grid(self, n: int) -> Tensor:
        """The step grid multidiff uses for this process when none is given ([n + 1], ending in 0)."""
        raise NotImplementedError


@dataclass(frozen=True)
class EDMSchedule(Schedule):
    """Variance-exploding process in σ directly (EDM, Karras et al. 2022): s(σ) = 1, c_noise = ln(σ)/4.

    Args:
        sigma_min: smallest sampling σ.
        sigma_max: largest sampling σ.
        rho: ρ of the default Karras grid.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __post_init__(self) -> None:
        _check_range(self.sigma_min, self.sigma_max)
        if self.rho <= 0:
            raise ValueError(f"rho must be positive, got {self.rho}")

    def scale(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return sigma.log() / 4  # EDM Table 1, c_noise = ¼ ln σ

    def default_grid(self, n: int) -> Tensor:
        return karras(n, self.sigma_min, self.sigma_max, self.rho)


@dataclass(frozen=True)
class ContinuousVPSchedule(EDMSchedule):
    """EDM's σ process and c_noise = ln(σ)/4 with the network input scaled as a VP state, s(σ) = 1/√(1+σ²).

    With v-prediction this is the parametrisation of Stable Video Diffusion (Blattmann et al. 2023, App. D;
    diffusers' ``EulerDiscreteScheduler`` with ``timestep_type="continuous"``, σ in [0.002, 700]): the x0
    estimate is ``x/(1+σ²) - σ/√(1+σ²)·F`` and the network sees ``x/√(1+σ²)`` at ``t = ln(σ)/4``.
    """

    sigma_max: float = 700.0

    def scale(self, sigma: Tensor) -> Tensor:
        return (1 + sigma**2).rsqrt()


BetaSchedule = Literal["linear", "scaled_linear", "cosine"]


@dataclass(frozen=True)
class VPSchedule(Schedule):
    """Discrete-time variance-preserving process (DDPM, Ho et al. 2020), in σ.

    x_t = sqrt(ᾱ_t)·x0 + sqrt(1 - ᾱ_t)·n, so σ_t = sqrt((1 - ᾱ_t)/ᾱ_t) and s(σ) = 1/sqrt(1 + σ²).
    The network gets the fractional timestep t(σ), found by interpolating the table in log σ.

    Args:
        num_train_timesteps: N, the number of discrete training steps.
        beta_start: β_0 (linear / scaled_linear).
        beta_end: β_{N-1} (linear / scaled_linear).
        beta_schedule: "linear" (Ho et al. 2020), "scaled_linear" (linear in sqrt β, Stable Diffusion) or
            "cosine" (Nichol & Dhariwal 2021, Eq. 17, β clipped at 0.999).
        zero_terminal_snr: rescale sqrt(ᾱ) so that ᾱ_{N-1} = 0 (Lin et al. 2023, Algorithm 1); the
            terminal ᾱ is then :func:`terminal_alpha_bar` (2^-24, σ ≈ 4096, as in diffusers).
        grid: the default sampling grid: "karras" (ρ = 7 over the table's σ range), "trailing",
            "leading" or "uniform" (see the functions of those names). None picks "karras", or
            "trailing" with ``zero_terminal_snr`` (as Lin et al. 2023 do: a Karras grid from σ ≈ 4096
            spends its first steps where the sample hardly changes).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: BetaSchedule = "scaled_linear"
    zero_terminal_snr: bool = False
    grid: Literal["karras", "trailing", "leading", "uniform"] | None = None

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.beta_schedule not in ("linear", "scaled_linear", "cosine"):
            raise ValueError(
                f"unknown beta_schedule {self.beta_schedule!r}; use linear, scaled_linear or cosine"
            )
        if self.beta_schedule != "cosine" and not (0 < self.beta_start < self.beta_end < 1):
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.grid not in (None, "karras", "trailing", "leading", "uniform"):
            raise ValueError(f"unknown grid {self.grid!r}")
        # The σ table is derived once, here, and kept on the frozen instance (not module state).
        object.__setattr__(self, "_log_sigmas", self.sigmas_table().log())
        # copies of the table per (device, dtype), made on first use so a sampler loop on a GPU does not
        # copy the table from the host at every step (a blocking transfer)
        object.__setattr__(self, "_tables", {})

    def betas(self) -> Tensor:
        """β_t for t = 0 … N-1, float64."""
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            return torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float64)
        if self.beta_schedule == "scaled_linear":
            return torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float64) ** 2
        # cosine: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/N) + s)/(1 + s)·π/2), s = 0.008 (Nichol & Dhariwal 2021)
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)

    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t for t = 0 … N-1, float64 (with the zero-terminal-SNR rescale when asked)."""
        abar = torch.cumprod(1 - self.betas(), 0)
        if not self.zero_terminal_snr:
            return abar
        # Lin et al. 2023, Algorithm 1: shift and scale sqrt(ᾱ) so the last value is 0 and the first unchanged.
        r = abar.sqrt()
        r0, rT = r[0].clone(), r[-1].clone()
        r = (r - rT) * r0 / (r0 - rT)
        abar = r**2
        abar[-1] = terminal_alpha_bar(float(abar[-2]))  # σ = ∞ capped at ≈ 4096
        return abar

    def sigmas_table(self) -> Tensor:
        """σ_t = sqrt((1 - ᾱ_t)/ᾱ_t) for t = 0 … N-1, increasing, float64."""
        abar = self.alphas_cumprod()
        return ((1 - abar) / abar).sqrt()

    @property
    def sigma_min(self) -> float:  # type: ignore[override]
        return float(self._log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:  # type: ignore[override]
        return float(self._log_sigmas[-1].exp())

    def _table(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (str(device), dtype)
        if key not in self._tables:
            self._tables[key] = self._log_sigmas.to(device=device, dtype=dtype)
        return self._tables[key]

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """σ at fractional timesteps t ∈ [0, N-1], interpolating log σ linearly between table entries."""
        log_sigmas = self._table(t.device, torch.float64)
        t = t.to(torch.float64).clamp(0, self.num_train_timesteps - 1)
        lo = t.floor().long().clamp(max=self.num_train_timesteps - 2)
        w = t - lo
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[lo + 1]).exp()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep for σ (inverse of :meth:`t_to_sigma`), same dtype as sigma."""
        log_sigmas = self._table(sigma.device, torch.float32)
        ls = sigma.float().clamp_min(1e-30).log()
        # index of the last table entry <= log σ, so that lo and lo + 1 bracket it
        lo = (torch.searchsorted(log_sigmas, ls.contiguous(), right=True) - 1).clamp(0, len(log_sigmas) - 2)
        a, b = log_sigmas[lo], log_sigmas[lo + 1]
        w = ((ls - a) / (b - a)).clamp(0, 1)
        return (lo + w).to(sigma.dtype)

    def scale(self, sigma: Tensor) -> Tensor:
        return (1 + sigma**2).rsqrt()

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.sigma_to_t(sigma)

    def default_grid(self, n: int) -> Tensor:
        grid = self.grid or ("trailing" if self.zero_terminal_snr else "karras")
        if grid == "karras":
            return karras(n, self.sigma_min, self.sigma_max)
        if grid == "trailing":
            return trailing(self, n)
        if grid == "leading":
            return leading(self, n)
        return uniform_t(self, n)


@dataclass(frozen=True)
class FlowSchedule(Schedule):
    """Rectified flow (Liu et al. 2022; Esser et al. 2024): x_t = (1 - t)·x0 + t·n.

    In σ-space σ = t/(1 - t) and s(σ) = 1/(1 + σ) = 1 - t. The network gets ``timestep_scale · t``
    (1000·t for SD3 / diffusers flow models).

    Args:
        shift: the resolution shift of the default grid (SD3 uses 3.0).
        timestep_scale: multiplier of t in c_noise.
        sigma_min: smallest σ of the training / sampling range.
        sigma_max: the cap standing in for t = 1.
    """

    shift: float = 1.0
    timestep_scale: float = 1000.0
    sigma_min: float = 1e-3
    sigma_max: float = SIGMA_CAP

    def __post_init__(self) -> None:
        if self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")
        _check_range(self.sigma_min, self.sigma_max)

    def scale(self, sigma: Tensor) -> Tensor:
        return 1 / (1 + sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.timestep_scale * sigma / (1 + sigma)  # timestep_scale · t

    def default_grid(self, n: int) -> Tensor:
        return flow_shift(n, self.shift, self.sigma_min / (1 + self.sigma_min), self.sigma_max)


# ---------------------------------------------------------------------------------------------------
# Grids over a discrete VP table (the spacings of Lin et al. 2023, Table 2)
# ---------------------------------------------------------------------------------------------------


def _vp_grid(schedule: VPSchedule, t: Tensor) -> Tensor:
    if not isinstance(schedule, VPSchedule):
        raise ValueError(f"this grid needs a VPSchedule, got {type(schedule).__name__}")
    return append_zero(schedule.t_to_sigma(t))


def uniform_t(schedule: VPSchedule, n: int) -> Tensor:
    """n timesteps uniform in t from N-1 to 0 (fractional; k-diffusion's "normal" grid), then σ = 0."""
    _check_n(n)
    return _vp_grid(schedule, torch.linspace(schedule.num_train_timesteps - 1, 0, n, dtype=torch.float64))


def trailing(schedule: VPSchedule, n: int) -> Tensor:
    """ "Trailing" spacing (Lin et al. 2023, Table 2): t = round(N - k·N/n) - 1 for k = 0 … n-1, then σ = 0.

    Starts at the last training timestep, which zero-terminal-SNR schedules need.
    """
    _check_n(n)
    N = schedule.num_train_timesteps
    t = (torch.arange(N, 0, -N / n, dtype=torch.float64).round() - 1).clamp_min(0)[:n]
    return _vp_grid(schedule, t)


def leading(schedule: VPSchedule, n: int, offset: int = 0) -> Tensor:
    """ "Leading" spacing (DDIM, Song et al. 2021; Stable Diffusion with offset 1): t = k·(N // n) + offset.

    Returns:
        float64 [n + 1]: σ at those timesteps, decreasing, then 0.
    """
    _check_n(n)
    N = schedule.num_train_timesteps
    t = (torch.arange(n - 1, -1, -1, dtype=torch.float64) * (N // n) + offset).clamp(max=N - 1)
    return _vp_grid(schedule, t)
