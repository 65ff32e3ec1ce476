import math

import pytest
import torch

from multidiff.metrics import frechet_distance, gaussian_stats


def _samples(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mean.numel(), generator=g, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    # For diagonal covariances the distance is sum (mu_a - mu_b)^2 + sum (sqrt(va) - sqrt(vb))^2.
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([0.5, 1.0, 0.0])
    va, vb = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([2.0, 1.0, 0.25])
    a = _samples(mu_a.double(), torch.diag(va).double(), 200_000, 0)
    b = _samples(mu_b.double(), torch.diag(vb).double(), 200_000, 1)
    expected = float((mu_a - mu_b).square().sum() + (va.sqrt() - vb.sqrt()).square().sum())
    assert math.isclose(frechet_distance(a, b), expected, rel_tol=0.02)


def test_frechet_distance_full_covariance_against_eigen_formula():
    # Exact statistics in, exact answer out: build features whose sample statistics are known.
    g = torch.Generator().manual_seed(3)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    s_a = m @ m.T + torch.eye(4, dtype=torch.float64)
    a = _samples(torch.zeros(4, dtype=torch.float64), s_a, 4000, 4)
    b = _samples(torch.ones(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64) * 2, 4000, 5)
    mu_a, ca = gaussian_stats(a)
    mu_b, cb = gaussian_stats(b)
    # tr((Ca Cb)^(1/2)) from the eigenvalues of the (non-symmetric) product, a different route.
    tr_root = torch.linalg.eigvals(ca @ cb).real.clamp_min(0).sqrt().sum()
    expected = float((mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * tr_root)
    assert math.isclose(frechet_distance(a, b), expected, rel_tol=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one width"):
        frechet_distance(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(10, 3))
