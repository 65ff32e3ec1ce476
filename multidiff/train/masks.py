"""Frame-mask conditioning: one video model for generation, image-to-video, continuation and interpolation.

During training every clip gets a random set of *known* frames drawn from a curriculum (none, the first,
the first k, both ends). The backbone sees, as extra input channels (``cond_channels=``), the clean
latents of the known frames and the mask itself: ``C + 1`` channels ``[known · mask, mask]``. The loss
is taken on the unknown frames only. At sampling time the same channels carry a user's first frame
(image-to-video), a clip's leading frames (continuation) or its two ends (interpolation); with no known
frame the channels are zero and the model generates unconditionally. This is the masked-frame
conditioning of Voleti et al. 2022 ("MCVD: Masked Conditional Video Diffusion", Sec. 3), with the mask
given explicitly as in Blattmann et al. 2023 ("Stable Video Diffusion", image conditioning by
concatenation). One-frame clips (images) are never given known frames, so images train the same weights
as unconditional one-frame videos.

Axis letters: B batch, C channels, F frames, H height, W width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from multidiff.core.guidance import mask_channels
from multidiff.train.data import derive_seed

__all__ = ["FrameMaskCurriculum", "MODES", "sample_frame_masks", "frame_mask", "frame_cond"]

MODES: tuple[str, ...] = ("none", "first", "first_k", "ends")
_MASK_STREAM = 0x4D41534B  # "MASK": keeps the mask draws independent of the σ/noise draws of a sample


@dataclass(frozen=True)
class FrameMaskCurriculum:
    """Probabilities of the known-frame patterns drawn per training clip.

    Attributes:
        p_none: No known frame (unconditional generation).
        p_first: The first frame known (image-to-video).
        p_first_k: The first k frames known, 2 <= k <= ``max_known`` · F (continuation).
        p_ends: The first and the last frame known (interpolation).
        max_known: Largest share of a clip that ``first_k`` may make known (at most F - 1 frames).
    """

    p_none: float = 0.4
    p_first: float = 0.25
    p_first_k: float = 0.2
    p_ends: float = 0.15
    max_known: float = 0.5

    def __post_init__(self) -> None:
        for name in ("p_none", "p_first", "p_first_k", "p_ends"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"FrameMaskCurriculum.{name} must be a non-negative number, got {v!r}")
        total = self.p_none + self.p_first + self.p_first_k + self.p_ends
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"FrameMaskCurriculum probabilities must sum to 1, got {total!r}")
        if not 0.0 < self.max_known < 1.0:
            raise ValueError(f"FrameMaskCurriculum.max_known must lie in (0, 1), got {self.max_known!r}")

    @property
    def probs(self) -> tuple[float, float, float, float]:
        """Probabilities in the order of :data:`MODES`."""
        return (self.p_none, self.p_first, self.p_first_k, self.p_ends)


def frame_mask(mode: str, frames: int, k: int = 1) -> Tensor:
    """The ``[F]`` float mask (1 = known) of one pattern.

    ``first_k`` needs ``1 <= k < F``; ``ends`` needs ``F >= 3`` (with fewer frames it is ``first``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown frame-mask mode {mode!r}; known: {MODES}")
    m = torch.zeros(frames)
    if mode == "first":
        m[0] = 1
    elif mode == "first_k":
        if not 1 <= k < frames:
            raise ValueError(f"first_k needs 1 <= k < frames, got k={k}, frames={frames}")
        m[:k] = 1
    elif mode == "ends":
        m[0] = 1
        if frames >= 3:
            m[-1] = 1
    return m


def sample_frame_masks(curriculum: FrameMaskCurriculum, frames: int, seeds: Sequence[int] | Tensor) -> Tensor:
    """Draw one known-frame mask per clip, deterministically from its sample seed.

    Args:
        curriculum: The pattern probabilities.
        frames: Frames F per clip. With F = 1 (images) no frame is ever known.
        seeds: Per-sample seeds [B] (those of the data stream), so a clip gets the same mask whatever the
            batch size, the number of processes or a resumption.

    Returns:
        Float mask ``[B, 1, F, 1, 1]``, 1 on known frames; fewer than F frames are known.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
    probs = np.asarray(curriculum.probs, dtype=np.float64)
    kmax = max(1, min(frames - 1, int(math.floor(curriculum.max_known * frames))))
    out = torch.zeros(len(seeds), 1, frames, 1, 1)
    if frames == 1:
        return out
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(derive_seed(seed % 2**63, _MASK_STREAM))
        mode = MODES[int(rng.choice(len(MODES), p=probs / probs.sum()))]
        k = int(rng.integers(min(2, kmax), kmax + 1)) if mode == "first_k" else 1
        out[i, 0, :, 0, 0] = frame_mask(mode, frames, k)
    return out


frame_cond = mask_channels
"""``[known · mask, mask]``: the ``C + 1`` conditioning channels (:func:`multidiff.core.guidance.mask_channels`)."""
