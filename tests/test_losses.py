"""Training objective: the loss at the exact denoiser equals its analytic minimum; weightings equal the
ε / v / flow / EDM losses they stand for; σ distributions have the stated laws."""

import math
from dataclasses import dataclass

import pytest
import torch
from gmm_utils import IdealNetwork, mixture

from multidiff.core import losses
from multidiff.core.analytic import GaussianMixture
from multidiff.core.denoiser import Denoiser, scalings
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule


@dataclass(frozen=True)
class Fixed(losses.SigmaDistribution):
    sigma: float
    stratified: bool = False

    def icdf(self, u):
        return torch.full_like(u, self.sigma)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
def test_loss_at_exact_denoiser_equals_analytic_minimum_single_gaussian(sigma):
    stds = torch.tensor([[0.3, 0.5, 1.0, 2.0]], dtype=torch.float64)
    gm = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64), stds)
    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(100_000, g)
    loss = losses.denoising_loss(gm, x0, Fixed(sigma), weighting="uniform", generator=g)
    expect = float((stds**2 * sigma**2 / (stds**2 + sigma**2)).mean())
    assert abs(float(loss.mean()) / expect - 1) < 0.01
    # the EDM weighting multiplies by λ(σ); a worse denoiser scores worse
    edm = losses.denoising_loss(
        gm, x0, Fixed(sigma), weighting="edm", generator=torch.Generator().manual_seed(7)
    )
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    assert abs(float(edm.mean()) / (lam * expect) - 1) < 0.01
    worse = losses.denoising_loss(
        lambda x, s: gm(x, s) * 1.1, x0, Fixed(sigma), weighting="uniform", generator=g
    )
    assert float(worse.mean()) > float(loss.mean()) * 1.005


def test_loss_at_exact_denoiser_equals_minimum_mixture():
    gm = mixture(dim=3, k=3)
    g = torch.Generator().manual_seed(1)
    x0 = gm.sample(200_000, g)
    loss = losses.denoising_loss(gm, x0, Fixed(0.7), weighting="uniform", generator=g)
    assert abs(float(loss.mean()) / gm.min_loss(0.7, generator=torch.Generator().manual_seed(2)) - 1) < 0.02


@pytest.mark.parametrize(
    "prediction,schedule,weighting",
    [
        ("eps", VPSchedule(), "snr"),
        ("v", VPSchedule(), "v"),
        ("flow", FlowSchedule(), "flow"),
        ("edm", EDMSchedule(), "edm"),
    ],
)
def test_weighting_equals_the_loss_on_the_network_output(prediction, schedule, weighting):
    """λ(σ)·‖D - x0‖² = ‖F - F_target‖² for each prediction's customary loss."""
    torch.manual_seed(0)
    sigma = torch.tensor([0.05, 0.3, 1.0, 4.0, 30.0], dtype=torch.float64)
    x0 = torch.randn(5, 7, dtype=torch.float64)
    x = x0 + sigma[:, None] * torch.randn(5, 7, dtype=torch.float64)
    F = torch.randn(5, 7, dtype=torch.float64)  # an arbitrary network output
    c_skip, c_out, _, _ = (c.double()[:, None] for c in scalings(prediction, schedule, sigma.float(), 0.5))
    D = c_skip * x + c_out * F
    F_target = (x0 - c_skip * x) / c_out  # the output that would give D = x0
    lam = losses.loss_weight(weighting, sigma.float(), sigma_data=0.5).double()[:, None]
    torch.testing.assert_close(lam * (D - x0) ** 2, (F - F_target) ** 2, rtol=1e-4, atol=1e-8)


def test_min_snr_and_soft_min_snr():
    sigma = torch.tensor([0.1, 1.0, 10.0])
    torch.testing.assert_close(
        losses.loss_weight("min_snr", sigma, gamma=5.0), torch.tensor([5.0, 1.0, 0.01])
    )
    soft = losses.loss_weight("soft_min_snr", sigma, sigma_data=1.0)
    torch.testing.assert_close(soft, 1 / (sigma**2 + 1))
    with pytest.raises(ValueError, match="weighting"):
        losses.loss_weight("p2", sigma)


def test_sigma_distributions():
    g = torch.Generator().manual_seed(0)
    ln = losses.LogNormal(-1.2, 1.2).sample(200_000, generator=g).double().log()
    assert abs(float(ln.mean()) + 1.2) < 0.01 and abs(float(ln.std()) - 1.2) < 0.01
    s = losses.LogitNormal(0.0, 1.0).sample(200_000, generator=g).double()
    logit_t = (s / (1 + s)).logit()
    assert abs(float(logit_t.mean())) < 0.01 and abs(float(logit_t.std()) - 1) < 0.01
    lu = losses.LogUniform(0.01, 100.0).sample(100_000, generator=g).double().log()
    assert lu.min() >= math.log(0.01) - 1e-6 and lu.max() <= math.log(100) + 1e-6
    assert abs(float(lu.mean())) < 0.03
    vp = VPSchedule()
    du = losses.DiscreteUniform(vp).sample(50_000, generator=g).double()
    t = vp.sigma_to_t(du)
    assert torch.allclose(t, t.round(), atol=1e-2) and t.min() == 0 and t.max() == 999


def test_stratified_sampling_puts_one_draw_in_each_quantile_bin():
    dist = losses.LogNormal(stratified=True)
    s = dist.sample(64, generator=torch.Generator().manual_seed(3)).double()
    u = 0.5 * (1 + torch.erf((s.log() + 1.2) / (1.2 * math.sqrt(2))))  # back to quantiles
    bins = (u * 64).floor().long().sort().values
    assert torch.equal(bins, torch.arange(64))


def test_uncertainty_weight_starts_neutral_and_learns():
    gm = mixture(dim=4, dtype=torch.float32)
    x0 = gm.sample(256, torch.Generator().manual_seed(0))
    unc = losses.UncertaintyWeight()
    kw = dict(weighting="edm", generator=torch.Generator().manual_seed(1))
    plain = losses.denoising_loss(gm, x0, losses.LogNormal(), **kw)
    kw["generator"] = torch.Generator().manual_seed(1)
    with_u = losses.denoising_loss(gm, x0, losses.LogNormal(), uncertainty=unc, **kw)
    torch.testing.assert_close(plain, with_u)
    with_u.mean().backward()
    assert unc.linear.weight.grad.abs().sum() > 0


def test_mask_averages_over_kept_elements_only():
    x0 = torch.zeros(2, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    den = lambda x, s: torch.tensor([[1.0, 1.0, 100.0, 100.0], [1.0, 1.0, 1.0, 1.0]])  # noqa: E731
    loss = losses.denoising_loss(den, x0, Fixed(1.0), weighting="uniform", mask=mask)
    torch.testing.assert_close(loss, torch.tensor([1.0, 1.0]))


def test_training_a_denoiser_reduces_the_loss():
    """End to end on the core alone: a tiny MLP ε-model on 2-D mixture data learns."""
    torch.manual_seed(0)
    gm = mixture(dim=2, dtype=torch.float32)

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))

        def forward(self, x, c_noise):
            return self.net(torch.cat([x, c_noise[:, None] / 1000], 1))

    sch = VPSchedule()
    den = Denoiser(MLP(), "eps", sch)
    dist, weighting = losses.default_objective(sch)
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = losses.denoising_loss(den, gm.sample(256), dist, weighting="min_snr").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.detach().item()
    assert loss.detach().item() < 0.7 * first and weighting == "snr"


def test_ideal_network_has_minimal_loss_under_each_prediction():
    gm = mixture(dim=3)
    g = torch.Generator().manual_seed(4)
    x0 = gm.sample(50_000, g)
    sch = EDMSchedule()
    den = Denoiser(IdealNetwork(gm, "edm", sch), "edm", sch)
    loss = losses.denoising_loss(den, x0, Fixed(0.4), weighting="uniform", generator=g)
    assert abs(float(loss.mean()) / gm.min_loss(0.4, generator=g) - 1) < 0.03
