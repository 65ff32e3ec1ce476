"""The Denoiser reproduces the exact denoiser when wrapped around each prediction type's ideal network."""

import pytest
import torch
from gmm_utils import IdealNetwork, mixture
from torch import nn

from multidiff.core.denoiser import Denoiser, scalings
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule


def _sigmas(schedule, b):
    if isinstance(schedule, VPSchedule):  # integer timesteps, where the ideal VP networks are defined
        return schedule.t_to_sigma(torch.tensor([0, 3, 100, 500, 900, 999][:b], dtype=torch.float64))
    return torch.tensor([0.002, 0.05, 0.5, 2.0, 20.0, 80.0][:b], dtype=torch.float64)


@pytest.mark.parametrize(
    "prediction,schedule",
    [
        ("eps", VPSchedule()),
        ("v", VPSchedule()),
        ("x0", VPSchedule()),
        ("v", VPSchedule(beta_schedule="cosine")),
        ("flow", FlowSchedule()),
        ("edm", EDMSchedule()),
    ],
)
def test_each_parametrisation_reproduces_the_exact_denoiser(prediction, schedule):
    gm = mixture(dim=5)
    den = Denoiser(IdealNetwork(gm, prediction, schedule), prediction, schedule, sigma_data=0.5)
    sigma = _sigmas(schedule, 6)
    g = torch.Generator().manual_seed(1)
    x = gm.sample(6, g) + sigma[:, None] * torch.randn(6, 5, generator=g, dtype=torch.float64)
    out = den(x, sigma.float())
    exact = gm(x, sigma.float().double())
    torch.testing.assert_close(out, exact, rtol=1e-4, atol=1e-4)


def test_scalings_run_in_float32_under_bf16_backbone():
    class Bf16(nn.Module):
        def forward(self, x, c_noise):
            assert x.dtype == torch.float32 and c_noise.dtype == torch.float32
            return (x * 0.5).bfloat16()

    den = Denoiser(Bf16(), "eps", VPSchedule())
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    out = den(x, torch.tensor([0.1, 1.0, 10.0]))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    c_skip, c_out, c_in, c_noise = scalings("v", VPSchedule(), torch.tensor([1.0], dtype=torch.float16))
    assert c_skip.dtype == c_out.dtype == c_in.dtype == c_noise.dtype == torch.float32


def test_scalar_sigma_and_conditioning_pass_through():
    class Echo(nn.Module):
        def forward(self, x, c_noise, *, labels=None):
            return x * 0 + labels[:, None].float()

    den = Denoiser(Echo(), "x0", VPSchedule())
    out = den(torch.randn(2, 3), 1.0, labels=torch.tensor([4, 7]))
    assert torch.equal(out, torch.tensor([[4.0] * 3, [7.0] * 3]))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="prediction"):
        Denoiser(nn.Identity(), "epsilon")
    den = Denoiser(nn.Identity(), "edm")
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        den(torch.randn(2, 3), torch.ones(3))
