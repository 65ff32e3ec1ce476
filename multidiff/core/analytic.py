"""Closed-form denoiser of Gaussian-mixture data, and a reference probability-flow ODE solver.

For p(x0) = Σ_k w_k N(μ_k, diag(s_k²)) and x = x0 + σ·n, the noisy density is Σ_k w_k N(μ_k, diag(s_k² + σ²))
and the ideal denoiser (the minimiser of E‖D(x, σ) - x0‖², Karras et al. 2022, Eq. 3) is the posterior mean

    D*(x, σ) = Σ_k r_k(x) · (μ_k + s_k²/(s_k² + σ²)·(x - μ_k)),   r_k ∝ w_k N(x; μ_k, s_k² + σ²).

Its minimum loss at σ is Σ_k E_k[r_k-weighted posterior variance] which, for a single component, is
Σ_d s_d²σ²/(s_d² + σ²). Tests and benchmarks use this as "the perfect network".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GaussianMixture", "solve_ode"]


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of diagonal Gaussians over vectors of D dims.

    Args:
        weights: [K] mixture weights (normalised here).
        means: [K, D].
        stds: [K, D] per-dimension standard deviations (> 0).
    """

    weights: Tensor
    means: Tensor
    stds: Tensor

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.stds.shape != (k, d):
            raise ValueError(
                f"shapes disagree: weights {tuple(self.weights.shape)}, means {tuple(self.means.shape)}, "
                f"stds {tuple(self.stds.shape)}"
            )
        if (self.stds <= 0).any() or (self.weights < 0).any():
            raise ValueError("stds must be positive and weights non-negative")
        object.__setattr__(self, "weights", self.weights / self.weights.sum())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples [n, D] in the dtype of the means."""
        k = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        return self.means[k] + self.stds[k] * z

    def _posterior(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Responsibilities r [B, K] and per-component posterior means [B, K, D] for x [B, D], σ [B]."""
        dt = torch.promote_types(x.dtype, torch.float32)
        x, sigma = x.to(dt), sigma.to(dt)
        mu, s2 = self.means.to(x.device, dt), self.stds.to(x.device, dt) ** 2  # (K, D)
        var = s2[None] + sigma[:, None, None] ** 2  # (B, K, D)
        diff = x[:, None, :] - mu[None]  # (B, K, D)
        logp = -0.5 * ((diff**2 / var) + var.log()).sum(-1) + self.weights.to(x.device, dt).log()  # (B, K)
        r = torch.softmax(logp, dim=1)  # (B, K)
        post = mu[None] + s2[None] / var * diff  # (B, K, D)
        return r, post

    def denoise(self, x: Tensor, sigma: Tensor, **cond) -> Tensor:
        """D*(x, σ): x [B, ...] with prod(...) = D, σ [B] or scalar; returns x0_hat shaped and typed like x."""
        sigma = torch.as_tensor(sigma, device=x.device).expand(x.shape[0])
        r, post = self._posterior(x.reshape(x.shape[0], -1), sigma)
        return (r[..., None] * post).sum(1).reshape(x.shape).to(x.dtype)

    __call__ = denoise

    def min_loss(self, sigma: float, n: int = 200_000, generator: torch.Generator | None = None) -> float:
        """E‖D*(x, σ) - x0‖²/D at one σ: exact for one component, Monte Carlo (n draws) for several."""
        if len(self.weights) == 1:
            s2 = self.stds[0].double() ** 2
            return float((s2 * sigma**2 / (s2 + sigma**2)).mean())
        x0 = self.sample(n, generator).double()
        x = x0 + sigma * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        r, post = self._posterior(x, torch.full((n,), sigma, dtype=x0.dtype))
        # E[‖D* - x0‖²] = E[Var(x0 | x)] = E[Σ_k r_k (post_k² + v_k)] - ‖D*‖² with v_k = s_k²σ²/(s_k²+σ²)
        s2 = self.stds.double() ** 2
        v = s2 * sigma**2 / (s2 + sigma**2)  # (K, D)
        d = (r[..., None] * post).sum(1)
        second = (r[..., None] * (post**2 + v[None])).sum(1)
        return float((second - d**2).mean())


def solve_ode(denoiser, x: Tensor, sigma_from: float, sigma_to: float, steps: int = 2000) -> Tensor:
    """Reference solution of the probability-flow ODE dx/d(ln σ) = x - D(x, σ) by classical RK4 in ln σ.

    Integrates from σ_from down to σ_to > 0 (float64 recommended); for σ_to = 0 integrate to a tiny σ and
    apply D there. Accuracy O(h⁴) with h = ln(σ_from/σ_to)/steps.
    """
    if not (sigma_from > sigma_to > 0):
        raise ValueError(f"need sigma_from > sigma_to > 0, got {sigma_from}, {sigma_to}")
    u0, u1 = math.log(sigma_from), math.log(sigma_to)
    h = (u1 - u0) / steps

    def f(x: Tensor, u: float) -> Tensor:
        return x - denoiser(x, torch.full((x.shape[0],), math.exp(u), dtype=x.dtype, device=x.device))

    for i in range(steps):
        u = u0 + i * h
        k1 = f(x, u)
        k2 = f(x + 0.5 * h * k1, u + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, u + 0.5 * h)
        k4 = f(x + h * k3, u + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x
