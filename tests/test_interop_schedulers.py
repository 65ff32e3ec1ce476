"""Parity of the newer diffusers schedulers (EDM / cosine DPM-Solver++, CogVideoX DDIM, LCM) with multidiff's
samplers on the same denoiser and σ grid, and the round trip of a pipeline around a diffusers model."""

import math

import pytest
import torch
from gmm_utils import mixture
from test_interop_diffusers import _tiny_unet

from multidiff.core import samplers
from multidiff.core.denoiser import Denoiser
from multidiff.core.schedules import ContinuousVPSchedule, EDMSchedule, VPSchedule
from multidiff.interop.diffusers import (
    CosineEDMSchedule,
    SNRShiftedVPSchedule,
    from_diffusers,
    lcm_denoiser,
    prediction_from_config,
    sample_with_scheduler,
    schedule_from_config,
    sigmas_from_scheduler,
)

diffusers = pytest.importorskip("diffusers")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class _SeededNoise:
    """Stands in for diffusers' Brownian-tree noise: draws N(0, 1) in order from one generator per sample,
    as multidiff's samplers do with per-sample generators (so both loops see the same noise)."""

    def __init__(self, gens):
        self.gens = gens

    def __call__(self, x, **kw):
        gens = self.gens

        def draw(sigma, sigma_next):
            return torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens])

        return draw


@pytest.mark.parametrize("steps", [6, 20])
def test_edm_dpmsolver_multistep_matches_dpmpp_2m(steps):
    sch = diffusers.EDMDPMSolverMultistepScheduler(solver_order=2)
    gm = mixture(dim=8, dtype=torch.float32, seed=2)
    noise = torch.randn(32, 8, generator=torch.Generator().manual_seed(steps))
    ref = sample_with_scheduler(gm, sch, noise, steps)
    grid = sigmas_from_scheduler(sch, steps)
    out = samplers.sample_dpmpp_2m(gm, noise * sch.init_noise_sigma, grid)
    assert grid[-1] == 0 and abs(float(grid[0]) - 80.0) < 1e-3
    assert _rel(out, ref) < 1e-4
    assert schedule_from_config(sch.config, "EDMDPMSolverMultistepScheduler") == EDMSchedule(0.002, 80.0)


@pytest.mark.parametrize("steps", [5, 16])
def test_cosine_dpmsolver_sde_matches_dpmpp_2m_sde(steps, monkeypatch):
    """Stable Audio Open's scheduler is DPM-Solver++(2M) SDE; with the same noise it equals multidiff's."""
    import diffusers.schedulers.scheduling_cosine_dpmsolver_multistep as cos

    sch = diffusers.CosineDPMSolverMultistepScheduler(sigma_data=1.0, prediction_type="v_prediction")
    gm = mixture(dim=8, dtype=torch.float32, seed=3)
    seeds = list(range(16))
    noise = torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(s)) for s in seeds])
    gens_ref = [torch.Generator().manual_seed(s) for s in seeds]
    for g in gens_ref:  # the initial noise was the first draw of each generator
        torch.randn(8, generator=g)
    monkeypatch.setattr(cos, "BrownianTreeNoiseSampler", _SeededNoise(gens_ref))
    ref = sample_with_scheduler(gm, sch, noise, steps)
    grid = sigmas_from_scheduler(sch, steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = samplers.noise_like(torch.empty(16, 8), gens) * sch.init_noise_sigma
    out = samplers.sample_dpmpp_2m_sde(gm, x, grid, generator=gens)
    assert _rel(out, ref) < 1e-4
    # the σ grid is the schedule's own default (exponential over [0.3, 500])
    schedule = schedule_from_config(sch.config, "CosineDPMSolverMultistepScheduler")
    assert isinstance(schedule, CosineEDMSchedule)
    torch.testing.assert_close(schedule.default_grid(steps), grid, rtol=1e-5, atol=0)


def test_cosine_v_prediction_denoiser_is_the_scheduler_preconditioning():
    """EDM's v-preconditioning with σ_data = 1 (c_out < 0) is multidiff's "v" with an input scaled 1/√(1+σ²)."""
    sch = diffusers.CosineDPMSolverMultistepScheduler(sigma_data=1.0, prediction_type="v_prediction")
    schedule = schedule_from_config(sch.config, "CosineDPMSolverMultistepScheduler")
    assert prediction_from_config(sch.config, "CosineDPMSolverMultistepScheduler") == "v"

    class Net(torch.nn.Module):
        def forward(self, x, c_noise, **kw):
            return torch.sin(3 * x) + c_noise.reshape(-1, 1) * x

    den = Denoiser(Net(), prediction="v", schedule=schedule, sigma_data=1.0)
    x = torch.randn(4, 6)
    sigma = torch.tensor([0.3, 2.0, 40.0, 500.0])
    c_noise = sch.precondition_noise(sigma)
    want = sch.precondition_outputs(
        x, Net()(sch.precondition_inputs(x, sigma[:, None]), c_noise), sigma[:, None]
    )
    torch.testing.assert_close(den(x, sigma), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sigma_data=0.5"):
        prediction_from_config(
            diffusers.EDMDPMSolverMultistepScheduler(prediction_type="v_prediction").config,
            "EDMDPMSolverMultistepScheduler",
        )
    v1 = diffusers.EDMDPMSolverMultistepScheduler(prediction_type="v_prediction", sigma_data=1.0).config
    assert schedule_from_config(v1, "EDMDPMSolverMultistepScheduler") == ContinuousVPSchedule(0.002, 80.0)


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("steps", [8, 25])
def test_cogvideox_ddim_matches_ddim(zero_snr, steps):
    sch = diffusers.CogVideoXDDIMScheduler(
        snr_shift_scale=3.0,
        rescale_betas_zero_snr=zero_snr,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        clip_sample=False,
    )
    gm = mixture(dim=8, dtype=torch.float32, seed=4)
    noise = torch.randn(32, 8, generator=torch.Generator().manual_seed(steps))
    ref = sample_with_scheduler(gm, sch, noise, steps)
    grid = sigmas_from_scheduler(sch, steps)
    out = samplers.sample_ddim(gm, noise * math.sqrt(1 + grid[0].item() ** 2), grid)
    # with zero terminal SNR diffusers evaluates the first step at ᾱ = 0, we at σ ≈ 4096 (as for DDIM)
    assert _rel(out, ref) < (1e-3 if zero_snr else 1e-4)
    schedule = schedule_from_config(sch.config, "CogVideoXDDIMScheduler")
    assert isinstance(schedule, SNRShiftedVPSchedule) and schedule.snr_shift_scale == 3.0
    abar = sch.alphas_cumprod.double()
    if zero_snr:
        abar = abar[:-1]  # the ᾱ = 0 end stands in as 2^-24
    torch.testing.assert_close(schedule.alphas_cumprod()[: len(abar)], abar, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_lcm_matches_boundary_denoiser_with_full_renoising(steps):
    sch = diffusers.LCMScheduler()
    gm = mixture(dim=8, dtype=torch.float32, seed=5)
    noise = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    ref = sample_with_scheduler(gm, sch, noise, steps, generator=torch.Generator().manual_seed(7))
    grid = sigmas_from_scheduler(sch, steps)
    assert grid[-1] == 0
    out = samplers.sample_euler_ancestral(
        lcm_denoiser(gm, sch),
        noise * math.sqrt(1 + grid[0].item() ** 2),
        grid,
        generator=torch.Generator().manual_seed(7),
        eta=math.inf,
    )
    assert _rel(out, ref) < 1e-4
    assert isinstance(schedule_from_config(sch.config, "LCMScheduler"), VPSchedule)


def test_pipeline_around_a_diffusers_model_saves_and_reloads(tmp_path):
    from multidiff.pipeline import Pipeline, load_pipeline
    from multidiff.serialize import SamplingConfig

    sch = diffusers.CogVideoXDDIMScheduler(snr_shift_scale=2.0, prediction_type="v_prediction")
    pipe = Pipeline(
        from_diffusers(_tiny_unet(), sch),
        sampling=SamplingConfig(sampler="dpmpp_2m", steps=5, precision="fp32"),
    )
    a = pipe.generate(2, shape=(2, 8, 8), seed=3, progress=False)
    folder = pipe.save_pretrained(tmp_path / "pipe")
    again = load_pipeline(folder)
    assert type(again.backbone.model).__name__ == "UNet2DModel"
    assert isinstance(again.denoiser.schedule, SNRShiftedVPSchedule)
    b = again.generate(2, shape=(2, 8, 8), seed=3, progress=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "name,config",
    [("DDIMScheduler", {}), ("DDIMScheduler", {"set_alpha_to_one": False}), ("DPMSolverMultistepScheduler", {}),
     ("EulerDiscreteScheduler", {}), ("EulerDiscreteScheduler", {"timestep_spacing": "leading"}),
     ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}), ("HeunDiscreteScheduler", {}),
     ("EDMEulerScheduler", {}), ("FlowMatchEulerDiscreteScheduler", {})],
)  # fmt: skip
def test_scheduler_scaling_is_the_schedulers_start_and_end_on_any_grid(name, config):
    """On the scheduler's own grid, multidiff starts at noise · init (diffusers: noise · init_noise_sigma in its
    own space) and diffusers ends at multidiff's output · final; the answer depends on the grid passed, not on
    the scheduler's last set_timesteps (a caller's sigmas= or a multidiff grid)."""
    from multidiff.interop.diffusers import scheduler_scaling

    sch = getattr(diffusers, name)(**config)
    grid = sigmas_from_scheduler(sch, 8)
    init, final = scheduler_scaling(sch, grid)
    first, last = float(grid[0]), float(grid[-1])
    in_own_space = {  # multidiff's unscaled x in the scheduler's space, by where its σ comes from
        "DDIMScheduler": 1 / math.sqrt(1 + first**2), "DPMSolverMultistepScheduler": 1 / math.sqrt(1 + first**2),
        "FlowMatchEulerDiscreteScheduler": 1 / (1 + first),
    }.get(name, 1.0)  # fmt: skip
    # diffusers keeps its σ in float32; a flow scheduler has no init_noise_sigma (its pipelines start at noise)
    assert init * in_own_space == pytest.approx(float(getattr(sch, "init_noise_sigma", 1.0)), rel=1e-6)
    if name == "DDIMScheduler":  # diffusers returns the VP state at its final ᾱ
        assert final == pytest.approx(math.sqrt(float(sch.final_alpha_cumprod)), rel=1e-12)
        assert (final < 1) == (config.get("set_alpha_to_one") is False)
    else:
        assert final == pytest.approx(1.0 / (1 + last) if "Flow" in name else 1.0)
    sch.set_timesteps(3)  # another step count since: the same grid, the same answer
    assert scheduler_scaling(sch, grid) == (init, final)
