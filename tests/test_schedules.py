"""Schedules and step grids: formulas, and parity with diffusers' tables and timestep spacings."""

import math

import pytest
import torch

from multidiff.core import schedules
from multidiff.core.schedules import SIGMA_CAP, EDMSchedule, FlowSchedule, VPSchedule


def test_karras_formula_and_shape():
    g = schedules.karras(10, 0.002, 80.0, rho=7.0)
    assert g.shape == (11,) and g.dtype == torch.float64
    assert g[-1] == 0 and math.isclose(g[0], 80.0) and math.isclose(g[-2], 0.002, rel_tol=1e-12)
    assert (g[:-1] > g[1:]).all()
    i = 4  # EDM Eq. 5 at one interior index
    expect = (80.0 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert math.isclose(g[i], expect, rel_tol=1e-12)
    lin = schedules.karras(5, 1.0, 5.0, rho=1.0)  # ρ = 1 is linear in σ
    assert torch.allclose(lin[:-1], torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


def test_exponential_is_log_uniform():
    g = schedules.exponential(6, 0.01, 10.0)
    ratios = g[:-2] / g[1:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios)) and g[-1] == 0
    assert torch.allclose(schedules.polyexponential(6, 0.01, 10.0, rho=1.0), g)


@pytest.mark.parametrize("bad", [(0, 0.1, 1.0), (3, 0.0, 1.0), (3, 2.0, 1.0)])
def test_grid_errors(bad):
    with pytest.raises(ValueError):
        schedules.karras(*bad)


@pytest.mark.parametrize(
    "beta_schedule,diffusers_name,zero",
    [
        ("linear", "linear", False),
        ("scaled_linear", "scaled_linear", False),
        ("cosine", "squaredcos_cap_v2", False),
        ("scaled_linear", "scaled_linear", True),
    ],
)
def test_vp_table_matches_diffusers(beta_schedule, diffusers_name, zero):
    from diffusers import DDPMScheduler

    kw = dict(beta_start=0.00085, beta_end=0.012) if beta_schedule == "scaled_linear" else {}
    kw = dict(beta_start=0.0001, beta_end=0.02) if beta_schedule == "linear" else kw
    ours = VPSchedule(beta_schedule=beta_schedule, zero_terminal_snr=zero, **kw)
    ref = DDPMScheduler(
        beta_schedule=diffusers_name, rescale_betas_zero_snr=zero, **kw
    ).alphas_cumprod.double()
    a = ours.alphas_cumprod()
    # float32 in diffusers; our terminal ᾱ is 2^-24 (diffusers' own value in its σ-based schedulers)
    assert torch.allclose(a[:-1], ref[:-1], rtol=2e-6, atol=1e-9)
    if zero:
        assert ref[-1] < 1e-9 and math.isclose(ours.sigma_max, math.sqrt(2.0**24 - 1), rel_tol=1e-9)
    else:
        assert math.isclose(a[-1], ref[-1], rel_tol=2e-5)


def test_vp_timestep_round_trip():
    s = VPSchedule()
    t = torch.tensor([0.0, 1.0, 10.5, 500.25, 998.9, 999.0], dtype=torch.float64)
    sig = s.t_to_sigma(t)
    assert torch.allclose(s.t_to_sigma(torch.arange(1000.0)), s.sigmas_table())
    assert torch.allclose(s.sigma_to_t(sig.float()).double(), t, atol=2e-3)
    assert (sig[1:] > sig[:-1]).all()


@pytest.mark.parametrize("spacing,n", [("leading", 10), ("leading", 7), ("trailing", 10), ("trailing", 7)])
def test_vp_spacings_match_diffusers(spacing, n):
    from diffusers import DDIMScheduler

    sch = DDIMScheduler(
        timestep_spacing=spacing, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    sch.set_timesteps(n)
    vp = VPSchedule()
    expect = vp.t_to_sigma(sch.timesteps.double())
    grid = schedules.leading(vp, n) if spacing == "leading" else schedules.trailing(vp, n)
    assert torch.allclose(grid[:-1], expect, rtol=1e-9) and grid[-1] == 0


def test_uniform_t_spans_the_table():
    vp = VPSchedule()
    g = schedules.uniform_t(vp, 5)
    assert math.isclose(g[0], vp.sigma_max, rel_tol=1e-12) and math.isclose(
        g[-2], vp.sigma_min, rel_tol=1e-12
    )


def test_flow_shift_matches_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sch.set_timesteps(12)
    t = sch.sigmas.double()  # diffusers' flow "sigmas" are t in [0, 1]
    # diffusers starts its linspace at the *shifted* smallest training t, shift(1/1000)
    ours = schedules.flow_shift(12, shift=3.0, t_min=3 * 0.001 / (1 + 2 * 0.001))
    assert ours[0] == SIGMA_CAP  # t = 1 is capped
    assert torch.allclose(ours[1:-1], t[1:-1] / (1 - t[1:-1]), rtol=1e-5)  # float32 in diffusers
    assert ours[-1] == 0


def test_scales_and_c_noise():
    sigma = torch.tensor([0.1, 1.0, 10.0])
    assert torch.allclose(VPSchedule().scale(sigma), (1 + sigma**2).rsqrt())
    assert torch.allclose(FlowSchedule().scale(sigma), 1 / (1 + sigma))
    assert torch.allclose(FlowSchedule().c_noise(sigma), 1000 * sigma / (1 + sigma))
    assert torch.allclose(EDMSchedule().c_noise(sigma), sigma.log() / 4)
    assert torch.equal(EDMSchedule().scale(sigma), torch.ones(3))


def test_default_grids_are_valid():
    for sch in (
        VPSchedule(),
        VPSchedule(grid="trailing", zero_terminal_snr=True),
        EDMSchedule(),
        FlowSchedule(shift=3),
    ):
        g = sch.default_grid(8)
        assert g.shape == (9,) and g[-1] == 0 and (g[:-1] > g[1:]).all() and torch.isfinite(g).all()


def test_config_validation():
    with pytest.raises(ValueError, match="beta_schedule"):
        VPSchedule(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="sigma_min"):
        EDMSchedule(sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="shift"):
        FlowSchedule(shift=0)
