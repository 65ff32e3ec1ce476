"""Shared test fixtures: small Gaussian mixtures and 'ideal networks' for each prediction type.

The ideal networks compute their targets from the textbook definitions (DDPM's ε, Salimans & Ho's v,
flow velocity, EDM's F), independently of multidiff's scalings, so wrapping them in a Denoiser tests
the scalings for real.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from multidiff.core.analytic import GaussianMixture
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule


def mixture(dim: int = 4, k: int = 2, dtype=torch.float64, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    return GaussianMixture(
        weights=torch.rand(k, generator=g, dtype=dtype) + 0.3,
        means=torch.randn(k, dim, generator=g, dtype=dtype),
        stds=torch.rand(k, dim, generator=g, dtype=dtype) * 0.5 + 0.2,
    )


class IdealNetwork(nn.Module):
    """F(x_net, c_noise) = the exact target of `prediction` for the mixture, from first principles."""

    def __init__(self, gm: GaussianMixture, prediction: str, schedule, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.gm, self.prediction, self.schedule, self.sigma_data = gm, prediction, schedule, sigma_data

    def forward(self, x_net: Tensor, c_noise: Tensor) -> Tensor:
        x_net = x_net.double()
        c = c_noise.double()
        sch = self.schedule
        if self.prediction == "edm":
            sigma = (4 * c).exp()
            sd = self.sigma_data
            x = x_net * (sigma**2 + sd**2).sqrt()[:, None]
            x0 = self.gm(x, sigma)
            c_skip = sd**2 / (sigma**2 + sd**2)
            c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
            return (x0 - c_skip[:, None] * x) / c_out[:, None]
        if isinstance(sch, FlowSchedule):
            t = c / sch.timestep_scale  # x_t = (1 - t) x0 + t n
            x0 = self.gm(x_net / (1 - t)[:, None], t / (1 - t))
            assert self.prediction == "flow"
            return (x_net - x0) / t[:, None]  # u = n - x0
        assert isinstance(sch, VPSchedule)
        t = c.round().long()  # tests use integer timesteps
        abar = sch.alphas_cumprod()[t]  # x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε
        a, b = abar.sqrt()[:, None], (1 - abar).sqrt()[:, None]
        x0 = self.gm(x_net / a, (b / a)[:, 0])
        eps = (x_net - a * x0) / b
        return {"eps": eps, "x0": x0, "v": a * eps - b * x0}[self.prediction]


def rms(a: Tensor, b: Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def order(errors: list[float]) -> float:
    """Mean observed convergence order when the step count doubles."""
    return sum(math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)) / (len(errors) - 1)


SCHEDULES = {
    "vp": VPSchedule(),
    "edm": EDMSchedule(),
    "flow": FlowSchedule(),
}
