"""The one model contract: D(x, σ, **cond) -> x0_hat, whatever the network predicts.

Karras et al. 2022 (EDM), Eq. 7 and Table 1: D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)).

Write the network's own state as x_net = a·x0 + b·n with a = s(σ), b = s(σ)·σ (the schedule's scaling).
Then for each prediction type F:

=========  ========================  ==============================  ===============================
type       F predicts                c_skip                          c_out
=========  ========================  ==============================  ===============================
eps        n                         1                               -σ
x0         x0                        0                               1
v          a·n - b·x0 (Salimans &    a²/(a² + b²)                    -b/(a² + b²)
           Ho 2022)
flow       n - x0 (velocity)         a/(a + b)                       -b/(a + b)
edm        EDM Table 1 with σ_data   σ_d²/(σ² + σ_d²)                σ·σ_d/sqrt(σ² + σ_d²)
=========  ========================  ==============================  ===============================

and c_in = s(σ) (for ``edm``: 1/sqrt(σ² + σ_d²)), c_noise from the schedule (for ``edm``: ln(σ)/4).
All scalings are computed in float32; the backbone may run in bf16 under autocast.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from multidiff.core.schedules import EDMSchedule, Schedule

Prediction = Literal["eps", "x0", "v", "flow", "edm"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v", "flow", "edm")

__all__ = ["Denoiser", "Prediction", "PREDICTIONS", "scalings", "append_dims"]


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to a [B] tensor so it broadcasts against an ndim-D tensor."""
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def scalings(
    prediction: str, schedule: Schedule, sigma: Tensor, sigma_data: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) for noise levels σ [B], in float32 (see the module table)."""
    sigma = sigma.float()
    if prediction == "edm":
        sd2 = sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * sigma_data * (sigma**2 + sd2).rsqrt()
        c_in = (sigma**2 + sd2).rsqrt()
        return c_skip, c_out, c_in, schedule.c_noise(sigma).float()
    a = schedule.scale(sigma).float()
    b = a * sigma
    c_noise = schedule.c_noise(sigma).float()
    if prediction == "eps":
        return torch.ones_like(sigma), -sigma, a, c_noise
    if prediction == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), a, c_noise
    if prediction == "v":
        norm = a**2 + b**2
        return a**2 / norm, -b / norm, a, c_noise
    if prediction == "flow":
        norm = a + b
        return a / norm, -b / norm, a, c_noise
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


class Denoiser(nn.Module):
    """Wraps a backbone F into D(x, σ, **cond) -> x0_hat (EDM preconditioning, Karras et al. 2022).

    Args:
        backbone: ``forward(x_net, c_noise, **cond) -> F`` with the shape of x.
        prediction: what the backbone predicts: "eps", "x0", "v", "flow" or "edm".
        schedule: the noise process (scaling and c_noise); defaults to :class:`EDMSchedule`.
        sigma_data: data standard deviation, used by the "edm" preconditioning.

    ``forward(x, sigma, **cond)``: x [B, ...] unscaled (x0 + σ·n), σ [B] (or a scalar); returns x0_hat
    with x's shape and dtype. Conditioning keywords go to the backbone unchanged.
    """

    def __init__(
        self,
        backbone: nn.Module,
        prediction: Prediction = "edm",
        schedule: Schedule | None = None,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.backbone = backbone
        self.prediction = prediction
        self.schedule = schedule if schedule is not None else EDMSchedule()
        self.sigma_data = float(sigma_data)

    def forward(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(
                f"sigma must be a scalar or have shape [B] = [{x.shape[0]}], got {tuple(sigma.shape)}"
            )
        c_skip, c_out, c_in, c_noise = scalings(self.prediction, self.schedule, sigma, self.sigma_data)
        xf = x.float()
        F = self.backbone(xf * append_dims(c_in, x.ndim), c_noise, **cond)  # (B, C, ...)
        out = append_dims(c_skip, x.ndim) * xf + append_dims(c_out, x.ndim) * F.float()
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"prediction={self.prediction!r}, schedule={self.schedule}, sigma_data={self.sigma_data}"
