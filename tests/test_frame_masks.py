"""Frame-mask conditioning: the known-frame curriculum (statistics, shapes, determinism), the C + 1
conditioning channels, and a loss that ignores known frames."""

from __future__ import annotations

import pytest
import torch

from multidiff.core.losses import LogNormal
from multidiff.train import diffusion_loss
from multidiff.train.masks import FrameMaskCurriculum, frame_cond, frame_mask, sample_frame_masks

torch.set_num_threads(1)


def classify(m: torch.Tensor) -> tuple[str, int]:
    """The mode of one [F] mask and its number of known frames."""
    f, k = m.numel(), int(m.sum())
    if k == 0:
        return "none", 0
    if k == 2 and m[0] == 1 and m[-1] == 1 and f > 2 and m[1] == 0:
        return "ends", 2
    assert torch.equal(m[:k], torch.ones(k)) and torch.equal(m[k:], torch.zeros(f - k)), m
    return ("first" if k == 1 else "first_k"), k


def test_curriculum_statistics_and_shapes() -> None:
    cur = FrameMaskCurriculum(p_none=0.1, p_first=0.2, p_first_k=0.3, p_ends=0.4, max_known=0.5)
    n, f = 4000, 8
    masks = sample_frame_masks(cur, f, list(range(10_000, 10_000 + n)))
    assert masks.shape == (n, 1, f, 1, 1) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    counts = {"none": 0, "first": 0, "first_k": 0, "ends": 0}
    ks = set()
    for m in masks[:, 0, :, 0, 0]:
        mode, k = classify(m)
        counts[mode] += 1
        if mode == "first_k":
            ks.add(k)
    # binomial standard error at n = 4000 is <= 0.008: 0.03 is ~4 sigma
    for mode, p in zip(("none", "first", "first_k", "ends"), cur.probs, strict=True):
        assert abs(counts[mode] / n - p) < 0.03, (mode, counts[mode] / n, p)
    assert ks == {2, 3, 4}  # 2 <= k <= max_known * F
    assert float(masks.sum((1, 2, 3, 4)).max()) < f  # never every frame known


def test_masks_are_per_sample_deterministic_and_images_get_none() -> None:
    cur = FrameMaskCurriculum()
    a = sample_frame_masks(cur, 6, [3, 7, 11, 19])
    b = sample_frame_masks(cur, 6, torch.tensor([11, 100]))
    assert torch.equal(a[2], b[0])  # sample with seed 11: the same mask whatever its batch
    assert torch.equal(sample_frame_masks(cur, 6, [3, 7, 11, 19]), a)
    one = sample_frame_masks(FrameMaskCurriculum(0.0, 1.0, 0.0, 0.0), 1, range(50))
    assert one.shape == (50, 1, 1, 1, 1) and float(one.sum()) == 0  # one-frame clips: nothing known
    two = sample_frame_masks(FrameMaskCurriculum(0.0, 0.0, 0.0, 1.0), 2, range(5))
    assert two[:, 0, :, 0, 0].tolist() == [[1.0, 0.0]] * 5  # "ends" of a 2-frame clip keeps only the first


def test_frame_mask_patterns_and_validation() -> None:
    assert frame_mask("ends", 5).tolist() == [1, 0, 0, 0, 1]
    assert frame_mask("first_k", 5, 3).tolist() == [1, 1, 1, 0, 0]
    assert frame_mask("none", 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="first_k needs"):
        frame_mask("first_k", 4, 4)
    with pytest.raises(ValueError, match="unknown frame-mask mode 'last'"):
        frame_mask("last", 4)
    with pytest.raises(ValueError, match="sum to 1"):
        FrameMaskCurriculum(0.5, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="p_first must be a non-negative"):
        FrameMaskCurriculum(1.2, -0.2, 0.0, 0.0)
    with pytest.raises(ValueError, match="max_known must lie in"):
        FrameMaskCurriculum(max_known=1.0)


def test_frame_cond_channels() -> None:
    known = torch.randn(2, 3, 4, 5, 6)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0]])[:, None, :, None, None]
    c = frame_cond(known, mask)
    assert c.shape == (2, 4, 4, 5, 6)
    assert torch.equal(c[0, :3, 0], known[0, :, 0]) and torch.equal(c[0, :3, 3], known[0, :, 3])
    assert float(c[0, :3, 1:3].abs().sum()) == 0 and float(c[1, :3].abs().sum()) == 0
    assert torch.equal(c[:, 3], mask[:, 0].expand(2, 4, 5, 6))
    with pytest.raises(ValueError, match=r"needs the axes of the latents"):
        frame_cond(torch.zeros(2, 3, 4, 5), mask)
    # the same channels for 2-D latents (a mel or an image region)
    c2 = frame_cond(known[:, :, 0], mask[:, :, 0])
    assert c2.shape == (2, 4, 5, 6) and torch.equal(c2, c[:, :, 0])


def test_loss_ignores_known_frames() -> None:
    """With the mask 1 - known, what the model predicts on known frames does not change the loss."""
    x0 = torch.randn(3, 2, 5, 4, 4)
    known = sample_frame_masks(FrameMaskCurriculum(0.0, 0.5, 0.5, 0.0), 5, [1, 2, 3])
    assert float(known.sum()) > 0

    def model(offset: float):
        def d(x: torch.Tensor, sigma: torch.Tensor, **cond: object) -> torch.Tensor:
            return 0.5 * x + offset * known  # only the known frames depend on `offset`

        return d

    dist = LogNormal()
    a = diffusion_loss(model(0.0), x0, dist, seeds=[5, 6, 7], mask=1 - known)
    b = diffusion_loss(model(100.0), x0, dist, seeds=[5, 6, 7], mask=1 - known)
    c = diffusion_loss(model(100.0), x0, dist, seeds=[5, 6, 7])
    assert a.shape == (3,) and torch.allclose(a, b) and bool((c > a).all())
