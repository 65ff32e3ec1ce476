"""Samplers against exact answers: convergence order on the probability-flow ODE of a Gaussian mixture,
the mixture's statistics for stochastic samplers, per-sample seeds, and no host-device synchronisation."""

import functools

import pytest
import torch
from gmm_utils import IdealNetwork, mixture, order, rms

from multidiff.core import samplers, schedules
from multidiff.core.analytic import GaussianMixture, solve_ode
from multidiff.core.denoiser import Denoiser
from multidiff.core.schedules import VPSchedule

SMAX, SMIN = 20.0, 0.05


@pytest.fixture(scope="module")
def ode_problem():
    gm = mixture(dim=4)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * SMAX
    return gm, x, solve_ode(gm, x.clone(), SMAX, SMIN, steps=3000)


S = samplers
DETERMINISTIC = {
    # name: (sampler, expected order)
    "euler": (S.sample_euler, 1),
    "ddim": (S.sample_ddim, 1),
    "heun": (S.sample_heun, 2),
    "dpmpp_2m": (S.sample_dpmpp_2m, 2),
    "dpmpp_3m": (S.sample_dpmpp_3m, 3),
    "unipc_2": (functools.partial(S.sample_unipc, order=2, lower_order_final=False), 3),
    "unipc_2_bh1": (functools.partial(S.sample_unipc, order=2, variant="bh1", lower_order_final=False), 3),
    "unipc_3": (functools.partial(S.sample_unipc, order=3, lower_order_final=False), 3),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_ode_convergence_order(ode_problem, name):
    """Integrate to σ_min on log-uniform grids of 16, 32, 64 steps; the error falls as h^order."""
    gm, x, ref = ode_problem
    fn, p = DETERMINISTIC[name]
    errors = [rms(fn(gm, x.clone(), schedules.exponential(n, SMIN, SMAX)[:-1]), ref) for n in (16, 32, 64)]
    assert order(errors) > p - 0.3, (name, errors)
    assert errors[-1] < 2e-2


def test_third_order_multistep_beats_second_order(ode_problem):
    gm, x, ref = ode_problem
    g = schedules.exponential(32, SMIN, SMAX)[:-1]
    e2 = rms(S.sample_dpmpp_2m(gm, x.clone(), g), ref)
    e3 = rms(S.sample_dpmpp_3m(gm, x.clone(), g), ref)
    assert e3 < e2 / 3


def test_adaptive_solver_meets_its_tolerance(ode_problem):
    gm, x, ref = ode_problem
    g = torch.tensor([SMAX, SMIN], dtype=torch.float64)
    calls = []

    def counted(x, s):
        calls.append(1)
        return gm(x, s)

    coarse = rms(S.sample_dpm_adaptive(counted, x.clone(), g, rtol=1e-2, atol=1e-3), ref)
    n_coarse = len(calls)
    fine = rms(S.sample_dpm_adaptive(counted, x.clone(), g, rtol=1e-4, atol=1e-5), ref)
    assert fine < 1e-3 and fine < coarse / 10 and len(calls) - n_coarse > n_coarse


def test_all_samplers_end_on_the_denoised_value_at_sigma_zero():
    gm = mixture(dim=3)
    x = torch.randn(4, 3, dtype=torch.float64) * 10
    g = schedules.karras(6, 0.02, 10.0)
    for name, fn in S.SAMPLERS.items():
        last = {}

        def recorded(x_, sigma, _last=last, **cond):
            _last["sigma"], _last["x0"] = sigma, gm(x_, sigma, **cond)
            return _last["x0"]

        out = fn(recorded, x.clone(), g, generator=torch.Generator().manual_seed(0))
        assert out.shape == x.shape and torch.isfinite(out).all(), name
        # the step to σ = 0 returns the denoiser's last prediction, made at the grid's last σ > 0
        assert torch.equal(out, last["x0"]), name
        assert float(torch.as_tensor(last["sigma"]).flatten()[0]) == pytest.approx(float(g[-2])), name


STOCHASTIC = {
    "euler_ancestral": S.sample_euler_ancestral,
    "ddpm": S.sample_ddpm,
    "ddim_eta_0.5": functools.partial(S.sample_ddim, eta=0.5),
    "dpmpp_2m_sde": S.sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": S.sample_dpmpp_3m_sde,
    "heun_churn": functools.partial(S.sample_heun, s_churn=20.0),
    "dpmpp_2m": S.sample_dpmpp_2m,  # an ODE sampler must reproduce the statistics too
}


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_samplers_reproduce_mixture_statistics(name):
    """1-D mixture 0.3·N(-2, 0.5²) + 0.7·N(2, 0.3²): weights, means and stds of the samples."""
    gm = GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-2.0], [2.0]], dtype=torch.float64),
        torch.tensor([[0.5], [0.3]], dtype=torch.float64),
    )
    n = 6000
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64) * 80.0
    out = STOCHASTIC[name](gm, x, schedules.karras(100, 0.002, 80.0), generator=g)[:, 0]
    left, right = out[out < 0], out[out >= 0]
    assert abs(len(left) / n - 0.3) < 0.03, name
    for part, mean, std in ((left, -2.0, 0.5), (right, 2.0, 0.3)):
        assert abs(float(part.mean()) - mean) < 0.04, (name, float(part.mean()))
        assert abs(float(part.std()) / std - 1) < 0.06, (name, float(part.std()))


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm"])
def test_per_sample_seeds_do_not_depend_on_batch_size(name):
    gm = mixture(dim=6, dtype=torch.float32)
    g = schedules.karras(8, 0.01, 20.0)
    noise = torch.randn(4, 6) * 20.0

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = S.SAMPLERS[name](gm, noise.clone(), g, generator=gens([10, 11, 12, 13]))
    single = S.SAMPLERS[name](gm, noise[2:3].clone(), g, generator=gens([12]))
    torch.testing.assert_close(batch[2:3], single, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="generators"):
        S.SAMPLERS[name](gm, noise.clone(), g, generator=gens([1, 2]))


@pytest.mark.parametrize("name", [k for k in S.SAMPLERS if k != "dpm_adaptive"])
def test_no_host_device_sync_in_the_loop(name):
    """On the meta device any .item() or data-dependent branch raises: the loop must not need values."""

    def den(x, sigma, **cond):
        return x * 0.5 + sigma[:, None]

    x = torch.empty(2, 3, device="meta")
    out = S.SAMPLERS[name](den, x, schedules.karras(5, 0.1, 10.0))
    assert out.device.type == "meta" and out.shape == (2, 3)


def test_zero_terminal_snr_samples_from_pure_noise_without_nan():
    gm = mixture(dim=4, dtype=torch.float32)
    sch = VPSchedule(zero_terminal_snr=True, grid="trailing")
    den = Denoiser(IdealNetwork(gm, "v", sch), "v", sch)
    grid = sch.default_grid(10)
    target = gm.sample(20000, torch.Generator().manual_seed(0)).mean(0)
    for name in ("euler", "dpmpp_2m", "unipc", "heun", "euler_ancestral"):
        g = torch.Generator().manual_seed(5)
        noise = torch.randn(2000, 4, generator=g)
        out = S.SAMPLERS[name](den, noise * grid[0].item(), grid, generator=g)
        assert torch.isfinite(out).all(), name
        if name != "heun":  # Heun's trapezoid over the step σ = 1e4 -> 18 is inaccurate by design
            assert (out.mean(0) - target).abs().max() < 0.1, name


def test_callback_and_cond_are_forwarded():
    seen = []

    def den(x, sigma, *, scale):
        return x * scale

    S.sample_euler(
        den, torch.ones(2, 2), schedules.karras(3, 0.1, 1.0), cond={"scale": 0.0}, callback=seen.append
    )
    assert [d["i"] for d in seen] == [0, 1, 2] and seen[0]["sigma"] == 1.0 and seen[-1]["sigma_next"] == 0.0


def test_registry_names_and_errors():
    for name in (
        "euler",
        "euler_a",
        "heun",
        "ddim",
        "ddpm",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_3m_sde",
        "unipc",
        "uni_pc",
        "uni_pc_bh2",
        "dpm_adaptive",
        "k_euler_a",
        "dpm++_2m",
    ):
        assert callable(S.SAMPLERS[name])
    assert S.get_sampler("DPM++ 2M") is S.sample_dpmpp_2m
    with pytest.raises(ValueError, match="unknown sampler"):
        S.get_sampler("plms")
    with pytest.raises(ValueError, match="decreasing"):
        S.sample_euler(lambda x, s: x, torch.zeros(1, 1), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="order"):
        S.sample_unipc(lambda x, s: x, torch.zeros(1, 1), torch.tensor([1.0, 0.0]), order=4)


def test_public_acceptance_api():
    from multidiff.core import samplers as smp
    from multidiff.core import schedules as sch

    sigmas = sch.karras(10, 0.002, 80.0, rho=7.0)
    out = smp.SAMPLERS["dpmpp_2m"](
        lambda x, sigma: x / (1 + sigma[:, None] ** 2), torch.randn(3, 2) * 80, sigmas
    )
    assert out.shape == (3, 2)


def test_to_device_async_is_a_no_op_on_the_same_device_and_moves_otherwise():
    from multidiff.core.samplers import to_device_async

    t = torch.randn(3, 4)
    assert to_device_async(t, t.device) is t
    moved = to_device_async(t, torch.device("meta"))
    assert moved.device.type == "meta" and moved.shape == t.shape
