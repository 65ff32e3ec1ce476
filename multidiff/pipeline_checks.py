"""The arguments of :meth:`multidiff.pipeline.Pipeline.sample` checked before anything is allocated: each
refusal is a ValueError that names the argument, for what would otherwise fail deep inside a sampler or be
silently ignored (a guidance scale with nothing to guide, known data with neither a mask nor a strength,
a mask for more samples than asked)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["MAX_LATENT_BYTES", "check_batch", "check_guidance", "check_latent_size", "check_sample_request"]

#: Latents larger than this are refused before anything is allocated (a mistyped length, not a real request).
MAX_LATENT_BYTES = 16 * 2**30


def check_sample_request(
    pipe: Any,
    num: int,
    shape: Sequence[int],
    *,
    steps: Any,
    sigmas: Any,
    guidance: Any,
    label: Any,
    prompt: Any,
    cond: Mapping[str, Any] | None,
    uncond: Mapping[str, Any] | None,
    known: Any,
    mask: Any,
    strength: float | None,
) -> tuple[int, ...]:
    """Refuse what :meth:`~multidiff.pipeline.Pipeline.sample` cannot do or would ignore; returns the shape
    as a tuple of ints."""
    shape = check_latent_size(num, shape)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if steps is not None and sigmas is not None:
        raise ValueError("give steps= or sigmas=, not both (an explicit σ grid fixes the step count)")
    check_guidance(pipe, guidance, label, prompt, cond, uncond)
    if known is not None and mask is None and strength is None:
        raise ValueError("known= needs mask= (what to keep) or strength= (SDEdit); alone it would be ignored")
    if strength is not None:
        if known is None:
            raise ValueError("strength (SDEdit) needs known= input to start from")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
    if mask is not None:
        m = torch.as_tensor(mask).shape
        try:
            fits = torch.broadcast_shapes(m, (num, *shape)) == (num, *shape)
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"a mask of shape {tuple(m)} does not fit {num} sample(s) of latent shape {shape}")
    return shape


def check_guidance(
    pipe: Any,
    guidance: Any,
    label: Any,
    prompt: Any,
    cond: Mapping[str, Any] | None = None,
    uncond: Mapping[str, Any] | None = None,
) -> None:
    """Refuse a guidance scale that would be ignored: a model with neither labels nor a text encoder, or
    nothing (label, prompt, conditioning) to guide towards. A scale of 1 is plain sampling, always fine."""
    if guidance is None or float(guidance) == 1.0:
        return
    if pipe.num_classes is None and pipe.text_encoder is None:
        raise ValueError(
            "guidance needs a class-conditional or captioned model; this one has neither labels nor a "
            "text encoder, so the scale would be ignored"
        )
    if label is None and prompt is None and not uncond and not {"labels", "context"} & set(cond or {}):
        raise ValueError(
            f"guidance {float(guidance):g} needs a label or a prompt to guide towards; without one the "
            "model samples unconditionally and the scale would be ignored"
        )


def check_batch(num: int, shape: Sequence[int], **tensors: torch.Tensor | None) -> None:
    """Refuse latents (``known``, ``mask``: ``[B, *shape]``, B = 1 for all samples) made for another number of
    samples than ``num``, naming the argument."""
    for name, z in tensors.items():
        if z is not None and z.ndim == len(shape) + 1 and z.shape[0] not in (1, num):
            raise ValueError(f"{name}= holds {z.shape[0]} samples for {num} asked for; give 1 (for all) or {num}")


def check_latent_size(num: Any, shape: Sequence[int]) -> tuple[int, ...]:
    """Refuse ``num`` samples of latent ``shape`` that are empty or would need more than
    :data:`MAX_LATENT_BYTES` (a mistyped length, not a real request); returns the shape as ints."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"the latent shape {shape} is empty: ask for more seconds, frames or pixels")
    size = num * math.prod(shape) * 4
    if size > MAX_LATENT_BYTES:
        raise ValueError(
            f"{num} sample(s) of latent shape {shape} need {size / 2**30:.1f} GiB for the latents alone "
            f"(the limit is {MAX_LATENT_BYTES / 2**30:.0f} GiB): ask for less media or a smaller batch"
        )
    return shape
