"""Tests for multidiff.core.ema: warm-up EMA, power-function EMA and post-hoc reconstruction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from multidiff.core.ema import (
    EMA,
    SIGMA_REL_MAX,
    EMASnapshot,
    PowerEMA,
    gamma_to_sigma_rel,
    posthoc_ema,
    posthoc_ema_coefficients,
    sigma_rel_to_gamma,
)


class Tiny(nn.Module):
    """One weight vector and one buffer: enough to follow every element by hand."""

    def __init__(self, dim: int = 8, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=dtype))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def _trajectory(steps: int, dim: int, seed: int = 0) -> torch.Tensor:
    """A training-like weight trajectory [steps, dim]: drift plus random-walk noise (float64)."""
    g = torch.Generator().manual_seed(seed)
    tau = torch.arange(1, steps + 1, dtype=torch.float64)[:, None] / steps
    drift = torch.sin(3.0 * tau * torch.linspace(0.5, 2.0, dim, dtype=torch.float64)) + 2.0 * tau
    walk = torch.cumsum(torch.randn(steps, dim, generator=g, dtype=torch.float64), dim=0) * 0.05
    return drift + walk


# --------------------------------------------------------------------------------------------- EMA


def test_decay_schedule_values() -> None:
    ema = EMA(Tiny(), decay=0.5)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(5) == pytest.approx(6 / 15)
    assert ema.decay_at(7) == pytest.approx(8 / 17)
    assert ema.decay_at(8) == pytest.approx(0.5)  # 9/18 reaches the cap
    assert ema.decay_at(1000) == 0.5
    with pytest.raises(ValueError, match="decay"):
        EMA(Tiny(), decay=1.0)


def test_ema_warmup_matches_hand_recurrence() -> None:
    model, decay = Tiny(dim=5), 0.9
    hist = _trajectory(40, 5)
    with torch.no_grad():
        model.w.copy_(hist[0])
    ema = EMA(model, decay=decay)
    ref = hist[0].clone()
    for step in range(1, 40):
        with torch.no_grad():
            model.w.copy_(hist[step])
            model.count.fill_(step)
        ema.update(model, step - 1)
        d = min(decay, (1 + (step - 1)) / (10 + (step - 1)))
        ref = d * ref + (1 - d) * hist[step]
    torch.testing.assert_close(ema.state_dict()["w"].double(), ref, rtol=1e-6, atol=1e-6)
    assert int(ema.state_dict()["count"]) == 39  # buffers are copied, not averaged


def test_ema_of_constant_sequence() -> None:
    model = Tiny(dim=4)
    with torch.no_grad():
        model.w.fill_(3.0)
    ema = EMA(model, decay=0.999)
    for step in range(50):
        ema.update(model, step)
    assert torch.equal(ema.state_dict()["w"], torch.full((4,), 3.0))  # lerp(a, a) is exactly a

    # From 0 towards a constant 1, the gap is prod_s decay_s = 9! n! / (n + 9)! while the ramp is below the cap.
    model = Tiny(dim=4)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.w.fill_(1.0)
    n = 30
    for step in range(n):
        ema.update(model, step)
    gap = math.factorial(9) * math.factorial(n) / math.factorial(n + 9)
    torch.testing.assert_close(ema.state_dict()["w"], torch.full((4,), 1.0 - gap), rtol=0, atol=1e-6)


def test_ema_float32_shadow_copy_to_and_state_round_trip() -> None:
    model = Tiny(dim=6, dtype=torch.bfloat16)
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.w.fill_(1.0)
    ema.update(model, 0)
    assert ema.state_dict()["w"].dtype == torch.float32
    torch.testing.assert_close(ema.state_dict()["w"], torch.full((6,), 0.9))  # 0.1·0 + 0.9·1
    assert set(ema.state_dict()) == set(model.state_dict())

    other = EMA(Tiny(dim=6, dtype=torch.bfloat16), decay=0.99)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.state_dict()["w"], ema.state_dict()["w"], rtol=0, atol=0)
    target = Tiny(dim=6, dtype=torch.bfloat16)
    other.copy_to(target)
    assert target.w.dtype == torch.bfloat16
    torch.testing.assert_close(target.w.float(), torch.full((6,), 0.9).bfloat16().float(), rtol=0, atol=0)

    with pytest.raises(ValueError, match="parameters"):
        ema.update(nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="shape"):
        ema.load_state_dict({"w": torch.zeros(3), "count": torch.zeros((), dtype=torch.long)})


# ------------------------------------------------------------------------------- power-function EMA


def test_sigma_rel_to_gamma_known_values_and_round_trip() -> None:
    # EDM2 (Sec. 3.1) quotes gamma ≈ 16.97 for sigma_rel 0.05 and ≈ 6.94 for 0.10.
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=5e-3)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=5e-3)
    for sigma_rel in (0.01, 0.05, 0.07, 0.1, 0.2, 0.29, SIGMA_REL_MAX):
        gamma = sigma_rel_to_gamma(sigma_rel)
        lhs = sigma_rel**2
        rhs = (gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))
        assert rhs == pytest.approx(lhs, rel=1e-12)
        assert gamma_to_sigma_rel(gamma) == pytest.approx(sigma_rel, rel=1e-12)
    for gamma in (0.0, 1.0, 6.94, 50.0):
        assert sigma_rel_to_gamma(gamma_to_sigma_rel(gamma)) == pytest.approx(gamma, rel=1e-9)
    # sigma_rel of the profile is its std over its length: check against numeric moments of τ^gamma on [0, 1].
    gamma = sigma_rel_to_gamma(0.07)
    tau = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    p = tau**gamma
    p = p / torch.trapezoid(p, tau)
    mean = torch.trapezoid(p * tau, tau)
    std = torch.trapezoid(p * (tau - mean) ** 2, tau).sqrt()
    assert float(std) == pytest.approx(0.07, rel=1e-5)
    with pytest.raises(ValueError, match="sigma_rel"):
        sigma_rel_to_gamma(0.31)
    with pytest.raises(ValueError, match="sigma_rel"):
        sigma_rel_to_gamma(0.0)


def _run_power_ema(
    steps: int, dim: int, sigma_rels: tuple[float, ...], every: int = 0
) -> tuple[torch.Tensor, PowerEMA, list[EMASnapshot]]:
    hist = _trajectory(steps, dim)
    model = Tiny(dim)
    ema = PowerEMA(model, sigma_rels=sigma_rels)
    snaps: list[EMASnapshot] = []
    for t in range(1, steps + 1):
        with torch.no_grad():
            model.w.copy_(hist[t - 1])
        ema.update(model, t)
        if every and t % every == 0:
            snaps.extend(ema.snapshots())
    return hist, ema, snaps


def test_power_ema_equals_weighted_history_average() -> None:
    steps, dim = 300, 16
    hist, ema, _ = _run_power_ema(steps, dim, (0.05, 0.10))
    tau = torch.arange(1, steps + 1, dtype=torch.float64)
    for i, gamma in enumerate(ema.gammas):
        got = ema.profile_state(i)["w"].double()
        # Exact weights of the recurrence: the profile (gamma+1) τ^gamma / t^(gamma+1) integrated per step.
        exact = tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)
        torch.testing.assert_close(got, (exact / exact.sum()) @ hist, rtol=1e-5, atol=1e-5)
        # The paper's description: weights proportional to τ^gamma (equal up to O(1/t)).
        approx = tau**gamma
        ref = (approx / approx.sum()) @ hist
        spread = hist[-100:].std(dim=0).mean()
        assert float((got - ref).abs().max()) < 0.02 * float(spread)
    # The two profiles really differ (the test above could not pass by accident).
    diff = ema.profile_state(0)["w"] - ema.profile_state(1)["w"]
    assert float(diff.abs().max()) > 0.05


def test_power_ema_ignores_initial_weights_and_round_trips_state() -> None:
    _, ema, _ = _run_power_ema(20, 4, (0.1,))
    model = Tiny(4)
    with torch.no_grad():
        model.w.fill_(100.0)
    fresh = PowerEMA(model, sigma_rels=(0.1,))
    fresh.update(model, 1)  # beta_1 = 0: the first update replaces the initial copy
    torch.testing.assert_close(fresh.profile_state(0)["w"], torch.full((4,), 100.0))

    restored = PowerEMA(Tiny(4), sigma_rels=(0.1,))
    restored.load_state_dict(ema.state_dict())
    assert restored.t == 20.0
    torch.testing.assert_close(restored.profile_state(0)["w"], ema.profile_state(0)["w"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="t_delta"):
        restored.update(model, 0.5)


def test_posthoc_reconstruction_matches_directly_tracked_profile() -> None:
    steps, dim, every = 800, 32, 40
    _, ema, snaps = _run_power_ema(steps, dim, (0.05, 0.10, 0.07), every=every)
    stored = [s for s in snaps if s.gamma != ema.gammas[2]]  # keep only the 0.05 and 0.10 profiles
    assert len(stored) == 2 * steps // every

    direct = ema.profile_state(2)["w"]
    recon = posthoc_ema(stored, 0.07)["w"]
    err = float((recon - direct).abs().max())
    between = float((ema.profile_state(0)["w"] - ema.profile_state(1)["w"]).abs().max())
    assert between > 0.05
    assert err < 0.005 * between, (err, between)  # averaging the two profiles would be off by ~8%

    # An earlier end time: compare with the 0.07 profile as it was at that time.
    at = 400
    direct_at = next(s for s in snaps if s.gamma == ema.gammas[2] and s.t == at).load()["w"]
    recon_at = posthoc_ema(stored, 0.07, t=at)["w"]
    assert float((recon_at - direct_at).abs().max()) < 0.01 * between

    # Lazily loaded snapshots give the same result; the non-float buffer comes from the latest one.
    lazy = [EMASnapshot(s.gamma, s.t, (lambda s=s: s.state)) for s in stored]
    out = posthoc_ema(lazy, 0.07)
    torch.testing.assert_close(out["w"], recon, rtol=0, atol=0)
    assert int(out["count"]) == 0


def test_posthoc_coefficients_select_an_exact_match() -> None:
    gammas = [16.97, 6.94, 16.97, 6.94]
    ts = [500.0, 500.0, 1000.0, 1000.0]
    coeffs = posthoc_ema_coefficients(gammas, ts, target_gamma=6.94, target_t=1000.0)
    torch.testing.assert_close(
        coeffs, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-8, rtol=0
    )
    # Huge exponents and times must not overflow (log-space inner products).
    coeffs = posthoc_ema_coefficients([300.0, 150.0], [1e8, 2e8], target_gamma=200.0, target_t=2e8)
    assert bool(torch.isfinite(coeffs).all())
