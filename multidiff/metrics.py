"""Sample-quality figures computed from feature vectors (torch only, no downloaded network).

The features come from whatever network the caller trusts: the benchmarks train a small classifier on
the same data (``benchmarks/audio_speech.py``, ``benchmarks/video_digits.py``), because no pretrained
Inception or VGGish network may be fetched here.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["frechet_distance", "gaussian_stats"]


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    x = features.detach().to(torch.float64)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D].

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (Dowson and Landau 1982; as FID, Heusel et al.
    2017, Eq. 6). The trace of the matrix square root is the sum of the square roots of the eigenvalues
    of the symmetric positive semi-definite ``S_a^(1/2) S_b S_a^(1/2)``, which has the same spectrum as
    ``S_a S_b``; computed in float64 with ``eigh``, so no complex parts and no scipy.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"need two [N, D] feature sets of one width, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    mu_a, s_a = gaussian_stats(a)
    mu_b, s_b = gaussian_stats(b)
    evals, evecs = torch.linalg.eigh(s_a)
    root_a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T  # S_a^(1/2)
    middle = root_a @ s_b @ root_a
    middle = (middle + middle.T) / 2  # symmetric up to rounding
    tr_root = torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * tr_root
    return float(fd.clamp_min(0))
