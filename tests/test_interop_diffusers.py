"""Parity with diffusers' schedulers on the same denoiser and grid, and diffusers models as Denoisers."""

import math

import pytest
import torch
from gmm_utils import mixture

from multidiff.core import samplers
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule
from multidiff.interop.diffusers import (
    from_diffusers,
    prediction_from_config,
    sample_with_scheduler,
    schedule_from_config,
    sigmas_from_scheduler,
)

diffusers = pytest.importorskip("diffusers")


def _cases():
    d = diffusers
    sd = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return {
        # name: (scheduler, our sampler, is the scheduler's sample in VP-scaled space?)
        "ddim": (d.DDIMScheduler(clip_sample=False), samplers.sample_ddim, True),
        "ddim_sd_trailing": (
            d.DDIMScheduler(clip_sample=False, timestep_spacing="trailing", **sd),
            samplers.sample_ddim,
            True,
        ),
        "dpmpp_2m": (d.DPMSolverMultistepScheduler(), samplers.sample_dpmpp_2m, True),
        "dpmpp_2m_karras_v": (
            d.DPMSolverMultistepScheduler(use_karras_sigmas=True, prediction_type="v_prediction", **sd),
            samplers.sample_dpmpp_2m,
            True,
        ),
        "unipc": (d.UniPCMultistepScheduler(), samplers.sample_unipc, True),
        # (diffusers' order-3 "bh1" returns NaN on its last step: B(h) = -h is infinite at σ = 0)
        "unipc_3": (
            d.UniPCMultistepScheduler(solver_order=3),
            lambda *a, **k: samplers.sample_unipc(*a, order=3, **k),
            True,
        ),
        # (and "bh1" NaN on any last step to σ = 0, so end this one at σ_min)
        "unipc_bh1": (
            d.UniPCMultistepScheduler(solver_type="bh1", final_sigmas_type="sigma_min"),
            lambda *a, **k: samplers.sample_unipc(*a, variant="bh1", **k),
            True,
        ),
        "euler": (d.EulerDiscreteScheduler(**sd), samplers.sample_euler, False),
        "edm_euler": (d.EDMEulerScheduler(), samplers.sample_euler, False),
        "heun": (d.HeunDiscreteScheduler(), samplers.sample_heun, False),
    }


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("steps", [8, 25])
def test_parity_with_diffusers_scheduler(name, steps):
    scheduler, ours, vp_space = _cases()[name]
    gm = mixture(dim=8, dtype=torch.float32, seed=2)
    noise = torch.randn(32, 8, generator=torch.Generator().manual_seed(steps))
    ref = sample_with_scheduler(gm, scheduler, noise, steps)
    grid = sigmas_from_scheduler(scheduler, steps)
    x = noise * scheduler.init_noise_sigma
    if vp_space:  # the scheduler starts from the VP state x_t; unscaled x = x_t·sqrt(1 + σ²)
        x = x * math.sqrt(1 + grid[0].item() ** 2)
    out = ours(gm, x, grid)
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 1e-4, (name, steps, rel)


def test_flow_match_euler_parity():
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    gm = mixture(dim=8, dtype=torch.float32, seed=3)
    noise = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    ref = sample_with_scheduler(gm, scheduler, noise, 12)
    grid = sigmas_from_scheduler(scheduler, 12)
    out = samplers.sample_euler(gm, noise * grid[0].item(), grid)  # x = x_t/(1-t) ≈ σ_cap·n at t ≈ 1
    assert float((out - ref).norm() / ref.norm()) < 1e-3  # σ = ∞ is capped at 1e4


def test_stochastic_schedulers_run_and_match_statistics():
    gm = mixture(dim=2, dtype=torch.float32, seed=4)
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    target = gm.sample(20000, torch.Generator().manual_seed(1))
    for scheduler in (
        diffusers.DDPMScheduler(clip_sample=False),
        diffusers.EulerAncestralDiscreteScheduler(),
    ):
        out = sample_with_scheduler(gm, scheduler, noise, 250, generator=torch.Generator().manual_seed(2))
        assert (out.mean(0) - target.mean(0)).abs().max() < 0.08 and (
            out.std(0) / target.std(0) - 1
        ).abs().max() < 0.1


def test_unsupported_scheduler_is_named():
    with pytest.raises(ValueError, match="LMSDiscreteScheduler"):
        sample_with_scheduler(
            mixture(dim=2, dtype=torch.float32), diffusers.LMSDiscreteScheduler(), torch.randn(1, 2), 4
        )


def test_schedule_and_prediction_from_config():
    d = diffusers
    vp = schedule_from_config(
        d.DDIMScheduler(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True).config
    )
    assert vp == VPSchedule(beta_start=0.0001, beta_end=0.02, beta_schedule="cosine", zero_terminal_snr=True)
    flow = schedule_from_config(d.FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    assert flow == FlowSchedule(shift=3.0, timestep_scale=1000.0)
    assert schedule_from_config(d.EDMEulerScheduler().config) == EDMSchedule(0.002, 80.0)
    assert prediction_from_config(d.DDIMScheduler(prediction_type="v_prediction").config) == "v"
    assert prediction_from_config(d.FlowMatchEulerDiscreteScheduler().config) == "flow"
    assert prediction_from_config(d.EDMEulerScheduler().config) == "edm"
    with pytest.raises(ValueError, match="beta_schedule"):
        schedule_from_config({"beta_schedule": "sigmoid"})


def _tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusers_model_as_denoiser_matches_scheduler_formula(prediction_type):
    unet = _tiny_unet()
    sch = diffusers.DDIMScheduler(prediction_type=prediction_type, clip_sample=False)
    den = from_diffusers(unet, sch)
    t = torch.tensor([10, 500, 990])
    abar = sch.alphas_cumprod[t]
    x0 = torch.randn(3, 2, 8, 8)
    x_t = abar.sqrt()[:, None, None, None] * x0 + (1 - abar).sqrt()[:, None, None, None] * torch.randn_like(
        x0
    )
    with torch.no_grad():
        out = unet(x_t, t).sample
        a, b = abar.sqrt()[:, None, None, None], (1 - abar).sqrt()[:, None, None, None]
        expect = (x_t - b * out) / a if prediction_type == "epsilon" else a * x_t - b * out
        sigma = ((1 - abar) / abar).sqrt()
        got = den(x_t / a, sigma)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)


def test_multidiff_sampler_runs_a_diffusers_model_like_its_scheduler():
    unet = _tiny_unet()
    sch = diffusers.DDIMScheduler(clip_sample=False)
    den = from_diffusers(unet, sch)
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = sample_with_scheduler(den, sch, noise, 6)
        grid = sigmas_from_scheduler(sch, 6)
        # drive the real network the diffusers way and the multidiff way on the same integer-timestep grid
        manual = sch.__class__.from_config(sch.config)
        manual.set_timesteps(6)
        x = noise.clone()
        for t in manual.timesteps:
            x = manual.step(unet(x, t).sample, t, x).prev_sample
        ours = samplers.sample_ddim(den, noise * math.sqrt(1 + grid[0].item() ** 2), grid)
    torch.testing.assert_close(ref, x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_zero_terminal_snr_ddim_runs_and_matches_our_ddim():
    """ᾱ = 0 at the last timestep (Lin et al. 2023's setting) must not crash; σ there is ≈ 4096."""
    sch = diffusers.DDIMScheduler(
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        clip_sample=False,
    )
    gm = mixture(dim=4, dtype=torch.float32, seed=5)
    noise = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    ref = sample_with_scheduler(gm, sch, noise, 10)
    grid = sigmas_from_scheduler(sch, 10)
    assert grid[0].item() > 4096.0 * 0.999  # ᾱ = 0 stands in as min(2^-24, ᾱ_998/2)
    out = samplers.sample_ddim(gm, noise * math.sqrt(1 + grid[0].item() ** 2), grid)
    # diffusers evaluates the first step at ᾱ = 0 exactly, we at σ ≈ 4096: a 1/4096-sized difference
    assert torch.isfinite(ref).all() and float((out - ref).norm() / ref.norm()) < 1e-3
    vp = schedule_from_config(sch.config)
    assert torch.allclose(vp.default_grid(10), schedules_trailing(vp, 10))  # trailing by default
    # the first σ maps to the last timestep, and the table stays increasing
    assert abs(float(vp.sigma_to_t(torch.tensor([grid[0].item()]))) - 999) < 1e-3
    assert (vp.sigmas_table()[1:] > vp.sigmas_table()[:-1]).all()
    sd = VPSchedule(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, zero_terminal_snr=True)
    assert math.isclose(sd.sigma_max, math.sqrt(2.0**24 - 1), rel_tol=1e-9)  # diffusers' own 2^-24


def schedules_trailing(vp, n):
    from multidiff.core.schedules import trailing

    return trailing(vp, n)


def test_learned_variance_dit_as_denoiser():
    torch.manual_seed(0)
    dit = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()
    den = from_diffusers(dit, diffusers.DDIMScheduler())
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        out = den(x, torch.tensor([1.0, 5.0]), labels=torch.tensor([1, 2]))
        eps = dit(
            x / torch.tensor([2.0, 26.0]).sqrt()[:, None, None, None],
            timestep=den.schedule.c_noise(torch.tensor([1.0, 5.0])),
            class_labels=torch.tensor([1, 2]),
        ).sample[:, :4]
    assert out.shape == x.shape
    torch.testing.assert_close(
        out, x - torch.tensor([1.0, 5.0])[:, None, None, None] * eps, rtol=1e-4, atol=1e-4
    )


def test_dpm_solver_with_flow_sigmas_is_a_flow_scheduler():
    sch = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    gm = mixture(dim=4, dtype=torch.float32, seed=6)
    noise = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    out = sample_with_scheduler(gm, sch, noise, 12)
    grid = sigmas_from_scheduler(sch, 12)
    assert grid[0] > 100 and grid[-1] == 0 and torch.isfinite(out).all()
    assert (out.mean(0) - gm.sample(4000, torch.Generator().manual_seed(1)).mean(0)).abs().max() < 0.5
    # the same algorithm as multidiff's DPM-Solver++(2M) on that grid, from the same noise (x = x0 + σ·n);
    # diffusers starts at t = 1, the grid at σ = SIGMA_CAP (1e4) standing in for it
    ours = samplers.sample_dpmpp_2m(gm, noise * float(grid[0]), grid.to(torch.float32))
    rel = float((ours - out).norm() / out.norm())
    assert rel < 1e-3, rel


SVD_SCHEDULER = dict(
    timestep_type="continuous", prediction_type="v_prediction", sigma_min=0.002, sigma_max=700.0,
    use_karras_sigmas=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
)  # fmt: skip


class _ToyV(torch.nn.Module):
    """A fixed nonlinear 'v-prediction network' of (x_in, t), to drive both loops with."""

    def forward(self, x, c_noise, **kw):
        t = torch.as_tensor(c_noise, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.tanh(x) * torch.cos(t) + 0.1 * x * t


@pytest.mark.parametrize("steps", [5, 25])
def test_svd_continuous_euler_is_ln_sigma_over_4_and_matches_diffusers(steps):
    """Stable Video Diffusion's scheduler (timestep_type='continuous', σ 0.002-700) used to become a VP table
    over σ 0.029-14.6 whose c_noise at σ = 700 was 999; it is EDM's σ with c_noise = ln(σ)/4 and a VP-scaled
    input, and multidiff's Euler on the same grid matches diffusers' loop."""
    from multidiff.core.denoiser import Denoiser
    from multidiff.core.schedules import ContinuousVPSchedule

    sch = diffusers.EulerDiscreteScheduler(**SVD_SCHEDULER)
    schedule = schedule_from_config(sch.config, "EulerDiscreteScheduler")
    assert isinstance(schedule, ContinuousVPSchedule) and (schedule.sigma_min, schedule.sigma_max) == (
        0.002,
        700.0,
    )
    assert prediction_from_config(sch.config, "EulerDiscreteScheduler") == "v"
    assert float(schedule.c_noise(torch.tensor(700.0))) == pytest.approx(0.25 * math.log(700.0), rel=1e-6)
    den = Denoiser(_ToyV(), prediction="v", schedule=schedule, sigma_data=1.0)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    sch.set_timesteps(steps)
    x = noise * sch.init_noise_sigma
    for t in sch.timesteps:
        x = sch.step(_ToyV()(sch.scale_model_input(x, t), t), t, x).prev_sample
    grid = sigmas_from_scheduler(sch, steps)
    assert float(grid[0]) == pytest.approx(700.0, rel=1e-5)
    with torch.no_grad():
        ours = samplers.sample_euler(den, noise * grid[0].float(), grid)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_continuous_timesteps_without_v_prediction_are_refused():
    cfg = {**SVD_SCHEDULER, "prediction_type": "epsilon"}
    with pytest.raises(ValueError, match="timestep_type='continuous' is defined only with"):
        schedule_from_config(cfg, "EulerDiscreteScheduler")
