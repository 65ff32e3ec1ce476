"""Guidance and inpainting as wrappers around a denoiser.

Every function here takes a denoiser ``D(x, sigma, **cond) -> x0_hat`` (``x = x0 + sigma * noise``,
unscaled EDM convention, ``sigma`` a float tensor [B]) and returns a new object with the same call
signature, so any sampler can run it unchanged (DESIGN.md, "Guidance").

* :func:`cfg`: classifier-free guidance (Ho & Salimans 2022) in one batched call, with the limited
  guidance interval of Kynkäänniemi et al. (2024) and the guidance rescale of Lin et al. (2023).
* :func:`autoguidance`: guidance by a weaker version of the same model (Karras et al. 2024).
* :func:`inpaint`: replace the x0 prediction by known data under a mask (inpainting, continuation).
* :class:`WindowedDenoiser`: inputs longer than the training length by overlapping windows (MultiDiffusion).
* :class:`StaticThreshold`: x0 predictions clamped to the training data's range (Imagen's static thresholding).
* :func:`mask_channels`: the ``[known · mask, mask]`` input channels of mask-conditioned backbones.

No wrapper synchronises host and device: per-sample switches use ``torch.where`` on tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Denoiser = Callable[..., Tensor]
"""Any callable ``D(x, sigma, **cond) -> x0_hat`` (the core denoiser contract)."""

Scalar = float | Tensor
"""A Python number, a 0-dim tensor, or a per-sample tensor [B]."""


def _per_sample(value: Scalar, ref: Tensor) -> Tensor:
    """Turn a scalar or a per-sample [B] tensor into a float32 tensor broadcastable to ``ref``."""
    if not isinstance(value, Tensor):  # a fill kernel, not a host-to-device copy, on a GPU
        return torch.full((), float(value), dtype=torch.float32, device=ref.device)
    value = value.to(device=ref.device, dtype=torch.float32)
    if value.ndim == 0:
        return value
    if value.ndim != 1 or value.shape[0] != ref.shape[0]:
        raise ValueError(
            f"guidance.py: a per-sample value must have shape [B]=[{ref.shape[0]}], got {tuple(value.shape)}"
        )
    return value.reshape(-1, *([1] * (ref.ndim - 1)))  # (B, 1, ...)


def _sigma_vector(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Return sigma as a float32 tensor [B] on x's device (a scalar is repeated)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"guidance.py: sigma must have shape [B]=[{x.shape[0]}], got {tuple(sigma.shape)}")
    return sigma


def _check_scalar(name: str, value: Scalar) -> None:
    if isinstance(value, Tensor):
        if value.ndim > 1:
            raise ValueError(
                f"guidance.py: {name} must be a number or a tensor [B], got shape {tuple(value.shape)}"
            )
    elif not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"guidance.py: {name} must be a finite number or a tensor [B], got {value!r}")


def _batch_cond(cond: Mapping[str, Any], uncond: Mapping[str, Any], batch: int) -> dict[str, Any]:
    """Build the conditioning of the doubled batch [conditional; unconditional].

    A tensor keyword listed in ``uncond`` is concatenated with its unconditional counterpart
    (broadcast to the conditional tensor's shape); any other tensor with a leading batch axis of
    size ``batch`` is repeated; everything else (None, numbers, tensors without a batch axis) is
    passed through unchanged.
    """
    missing = [k for k in uncond if cond.get(k) is None]
    if missing:
        raise ValueError(
            f"guidance.py: uncond gives {missing} but the call did not pass them; pass the conditional "
            "values too (for example context_mask=torch.ones(B, L, dtype=torch.bool))"
        )
    out: dict[str, Any] = {}
    for key, value in cond.items():
        if key in uncond:
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"guidance.py: conditioning {key!r} must be a tensor, got {type(value).__name__}"
                )
            null = uncond[key]
            if isinstance(null, Tensor):
                null = null.to(device=value.device, dtype=value.dtype)
            else:  # a number such as the null label: filled on the device, no host-to-device copy
                null = torch.full((), null, dtype=value.dtype, device=value.device)
            try:
                null = torch.broadcast_to(null, value.shape)
            except RuntimeError as err:
                raise ValueError(
                    f"guidance.py: uncond[{key!r}] of shape {tuple(null.shape)} does not broadcast to the "
                    f"conditional shape {tuple(value.shape)}"
                ) from err
            out[key] = torch.cat([value, null])  # (2B, ...)
        elif isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch:
            out[key] = torch.cat([value, value])  # (2B, ...)
        else:
            out[key] = value
    return out


def _rescale_in_v_space(x: Tensor, sigma: Tensor, guided: Tensor, cond: Tensor, phi: Tensor) -> Tensor:
    """Guidance rescale of Lin et al. (2023), Sec. 3.4, carried out in v-space.

    Lin et al. rescale the guided v-prediction so that its per-sample standard deviation matches
    the conditional one, then mix: ``v = phi * v_g * std(v_c) / std(v_g) + (1 - phi) * v_g``. In
    σ-space with the VP convention (sigma_data 1), ``s = 1/sqrt(1+σ²)``, ``n̂ = (x - x0)/σ`` and
    ``v = s·n̂ - s·σ·x0 = (s/σ)·(x - (1+σ²)·x0)``, and back ``x0 = (x - σ·v/s) / (1+σ²)``.

    Because v is affine in x0 with the per-sample factor ``s/σ``, the std ratio equals
    ``std(x - (1+σ²)x0_c) / std(x - (1+σ²)x0_g)`` and, writing ``r = phi·ratio + 1 - phi``, the
    round trip x0 -> v -> rescale -> x0 reduces exactly to ``x0 = r·x0_g + (1 - r)·x/(1+σ²)``.
    This closed form never divides by σ, so it stays finite at σ = 0.
    """
    dims = tuple(range(1, x.ndim))
    k = (1 + sigma**2).reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, ...) = 1 + σ²
    std_c = (x - k * cond).std(dim=dims, keepdim=True)  # ∝ std(v_c)
    std_g = (x - k * guided).std(dim=dims, keepdim=True)  # ∝ std(v_g)
    ratio = torch.where(
        std_g > 0, std_c / std_g.clamp_min(torch.finfo(std_g.dtype).tiny), torch.ones_like(std_g)
    )
    r = phi * ratio + (1 - phi)
    return r * guided + (1 - r) * x / k


@dataclass(frozen=True, eq=False)
class ClassifierFreeGuidance:
    """A denoiser with classifier-free guidance; build it with :func:`cfg`.

    Attributes:
        denoiser: The wrapped conditional denoiser.
        scale: Guidance scale w (number or per-sample tensor [B]); 1 is the conditional model.
        uncond: Unconditional counterparts of conditioning keywords.
        interval: Guidance is applied only where lo < σ <= hi, or everywhere when None.
        rescale: Guidance-rescale mix factor phi in [0, 1] (number or tensor [B]).
    """

    denoiser: Denoiser
    scale: Scalar
    uncond: Mapping[str, Any] = field(default_factory=dict)
    interval: tuple[float, float] | None = None
    rescale: Scalar = 0.0

    def __post_init__(self) -> None:
        _check_scalar("scale", self.scale)
        _check_scalar("rescale", self.rescale)
        if not isinstance(self.rescale, Tensor) and not 0.0 <= self.rescale <= 1.0:
            raise ValueError(f"guidance.py: rescale must lie in [0, 1], got {self.rescale}")
        if self.interval is not None:
            lo, hi = self.interval
            if not (0.0 <= lo < hi):
                raise ValueError(f"guidance.py: interval must satisfy 0 <= lo < hi, got {self.interval}")

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        """Guided x0 prediction ``u + w·(c - u)`` from one call on the doubled batch.

        Args:
            x: Noisy input [B, ...] (``x0 + sigma * noise``).
            sigma: Noise levels [B].
            **cond: Conditional keywords (labels, context, context_mask, ...).

        Returns:
            The guided x0 prediction, shaped and typed like the wrapped denoiser's output.
        """
        batch = x.shape[0]
        sigma = _sigma_vector(sigma, x)
        both = self.denoiser(
            torch.cat([x, x]), torch.cat([sigma, sigma]), **_batch_cond(cond, self.uncond, batch)
        )
        c, u = both[:batch].float(), both[batch:].float()  # (B, ...) each
        w = _per_sample(self.scale, c)
        guided = u + w * (c - u)  # Ho & Salimans (2022), applied to x0
        if isinstance(self.rescale, Tensor) or self.rescale != 0.0:
            guided = _rescale_in_v_space(x.float(), sigma, guided, c, _per_sample(self.rescale, c))
        if self.interval is not None:
            lo, hi = self.interval
            inside = ((sigma > lo) & (sigma <= hi)).reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, ...)
            guided = torch.where(inside, guided, c)  # Kynkäänniemi et al. (2024)
        return guided.to(both.dtype)


def cfg(
    denoiser: Denoiser,
    scale: Scalar,
    *,
    uncond: Mapping[str, Any] | None = None,
    interval: tuple[float, float] | None = None,
    rescale: Scalar = 0.0,
) -> ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance").

    The conditional and unconditional predictions come from ONE call on a batch of 2B: ``x`` and
    ``sigma`` are concatenated twice, each keyword named in ``uncond`` is concatenated with its
    unconditional value (e.g. ``labels`` with the null label ``num_classes``, ``context`` with an
    empty context plus ``context_mask``), and other batched keywords are repeated. The guided
    prediction is ``x0 = u + scale * (c - u)``.

    Args:
        denoiser: A denoiser ``D(x, sigma, **cond) -> x0_hat``.
        scale: Guidance scale (number or per-sample tensor [B]); 0 gives the unconditional model,
            1 the conditional one.
        uncond: Unconditional values per keyword; each must broadcast to the conditional tensor
            (e.g. ``{"labels": num_classes}`` or ``{"context": torch.zeros(1, L, D_ctx),
            "context_mask": torch.zeros(1, L, dtype=torch.bool)}``). Every key must be passed at call
            time. Defaults to no keyword (the model's own unconditional behaviour must then come from
            somewhere else, so you will normally give one).
        interval: ``(lo, hi)``: guide only where ``lo < sigma <= hi`` and return the conditional
            prediction elsewhere (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval
            Improves Sample and Distribution Quality in Diffusion Models"). Chosen per sample with
            ``torch.where``; both halves are still evaluated, so no host sync is needed.
        rescale: phi in [0, 1] for guidance rescale (Lin et al. 2023, "Common Diffusion Noise
            Schedules and Sample Steps Are Flawed", Sec. 3.4): the guided v-prediction's per-sample
            std is matched to the conditional one and mixed with the plain guided v by phi. The v of
            the VP convention (sigma_data 1) is used, as in the paper; see ``_rescale_in_v_space``.

    Returns:
        A denoiser with the same call signature.
    """
    return ClassifierFreeGuidance(denoiser, scale, dict(uncond or {}), interval, rescale)


@dataclass(frozen=True, eq=False)
class AutoGuidance:
    """A denoiser guided by a weaker version of itself; build it with :func:`autoguidance`.

    Attributes:
        denoiser: The main (good) denoiser D.
        weak_denoiser: The weak denoiser D_weak (smaller or less trained, same conditioning).
        scale: Guidance scale w (number or per-sample tensor [B]).
    """

    denoiser: Denoiser
    weak_denoiser: Denoiser
    scale: Scalar

    def __post_init__(self) -> None:
        _check_scalar("scale", self.scale)

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        """Guided x0 prediction ``D_weak + w·(D - D_weak)``; both models see the same ``cond``."""
        good = self.denoiser(x, sigma, **cond)
        weak = self.weak_denoiser(x, sigma, **cond).float()
        w = _per_sample(self.scale, weak)
        return (weak + w * (good.float() - weak)).to(good.dtype)  # Karras et al. (2024), autoguidance


def autoguidance(denoiser: Denoiser, weak_denoiser: Denoiser, scale: Scalar) -> AutoGuidance:
    """Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself").

    ``x0 = D_weak(x) + scale * (D(x) - D_weak(x))``: the difference between a good model and a
    degraded version of it (fewer parameters or training steps, same task and conditioning) points
    away from the weak model's errors, improving quality without the variety loss of CFG. Two
    calls are made, since the networks differ.

    Args:
        denoiser: The main denoiser D.
        weak_denoiser: The weaker denoiser D_weak.
        scale: Guidance scale (number or per-sample tensor [B]); 1 gives D, 0 gives D_weak.

    Returns:
        A denoiser with the same call signature.
    """
    return AutoGuidance(denoiser, weak_denoiser, scale)


@dataclass(frozen=True, eq=False)
class Inpaint:
    """A denoiser whose x0 prediction is pinned to known data; build it with :func:`inpaint`.

    Attributes:
        denoiser: The wrapped denoiser.
        known: Known clean data, broadcastable to x.
        mask: 1 where ``known`` holds, 0 where the model generates; broadcastable to x, float in [0, 1].
    """

    denoiser: Denoiser
    known: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if not self.mask.is_floating_point():
            raise ValueError(
                f"guidance.py: mask must be a float tensor in [0, 1], got dtype {self.mask.dtype}"
            )

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        """``mask * known + (1 - mask) * D(x, sigma, **cond)``."""
        pred = self.denoiser(x, sigma, **cond)
        mask = self.mask.to(device=pred.device, dtype=pred.dtype)
        known = self.known.to(device=pred.device, dtype=pred.dtype)
        return mask * known + (1 - mask) * pred


def inpaint(denoiser: Denoiser, known: Tensor, mask: Tensor) -> Inpaint:
    """Inpainting and continuation by replacing the denoiser's x0 prediction with known data.

    Method: the returned denoiser predicts ``x0 = mask * known + (1 - mask) * D(x, sigma)``. A
    σ-space sampler steps ``x <- x0 + (sigma_next / sigma) * (x - x0)`` (Euler), so on the known
    region the state becomes ``known + sigma_next * noise``: the known data with the sampler's own
    noise shrinking along its trajectory, and exactly ``known`` at the final ``sigma = 0``. The
    network sees the known region at the current noise level at every step and generates the rest
    to fit it. This is hard data consistency on the denoised estimate; unlike replacing the noisy
    state (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. I.2; Lugmayr et al.
    2022, "RePaint") it draws no fresh noise, so it works with deterministic samplers. Continuation
    of audio or video is the special case where the mask covers the leading frames or time steps.
    A soft mask (values between 0 and 1) blends the two predictions. Harmonisation across the mask
    border relies on the network alone, so very few steps can leave a visible seam.

    Args:
        denoiser: A denoiser ``D(x, sigma, **cond) -> x0_hat``.
        known: Known clean data (in the same latent space as x), broadcastable to x.
        mask: 1 where ``known`` is kept, 0 where the model generates; float, broadcastable to x.

    Returns:
        A denoiser with the same call signature.
    """
    return Inpaint(denoiser, known, mask)


# ---------------------------------------------------------------------------------------------------
# Windows over long inputs and static thresholding (wrappers around a denoiser, as cfg and inpaint)
# ---------------------------------------------------------------------------------------------------


def window_starts(total: int, length: int, overlap: int) -> list[int]:
    """Start indices of windows of ``length`` covering ``total`` positions, neighbours sharing ``overlap``.

    The stride is ``length - overlap``; the last window is aligned to the end. One window when
    ``total <= length``.
    """
    if length < 1 or not 0 <= overlap < length:
        raise ValueError(
            f"need length >= 1 and 0 <= overlap < length, got length={length}, overlap={overlap}"
        )
    if total <= length:
        return [0]
    stride = length - overlap
    starts = list(range(0, total - length, stride))
    starts.append(total - length)
    return starts


@dataclass(frozen=True, eq=False)
class WindowedDenoiser:
    """A denoiser for inputs longer than the model was trained on, by overlapping windows.

    MultiDiffusion (Bar-Tal et al. 2023, "MultiDiffusion: Fusing Diffusion Paths for Controlled Image
    Generation", Eq. 5): every window of ``length`` positions along ``axis`` is denoised on its own, and
    each position's x0 prediction is the average over the windows that contain it (the least-squares
    reconciliation of the per-window predictions). Conditioning tensors laid out like x (same number of
    dims and the full length on ``axis``, e.g. ``cond_channels``) are cut into the same windows; tensors
    with a leading batch axis are repeated; everything else is passed unchanged.

    Attributes:
        denoiser: ``D(x, sigma, **cond) -> x0_hat``.
        length: Window length along ``axis`` (the training length).
        overlap: Positions shared by neighbouring windows.
        axis: The time axis of x (negative counts from the end).
        windows_per_call: Windows evaluated together in one batched call.
    """

    denoiser: Callable[..., Tensor]
    length: int
    overlap: int
    axis: int = -1
    windows_per_call: int = 8

    def __post_init__(self) -> None:
        window_starts(self.length, self.length, self.overlap)  # validates length and overlap
        if self.windows_per_call < 1:
            raise ValueError(f"windows_per_call must be >= 1, got {self.windows_per_call}")

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        axis = self.axis % x.ndim
        total = x.shape[axis]
        if total <= self.length:
            return self.denoiser(x, sigma, **cond)
        starts = window_starts(total, self.length, self.overlap)
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        sigma = sigma.expand(b) if sigma.ndim == 0 else sigma
        acc = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
        count = torch.zeros(total, device=x.device, dtype=torch.float32)
        for g in range(0, len(starts), self.windows_per_call):
            group = starts[g : g + self.windows_per_call]
            k = len(group)
            xs = torch.cat([x.narrow(axis, s, self.length) for s in group])  # (k·B, ..., L, ...)
            cs = {key: self._cut(v, x, axis, group, b) for key, v in cond.items()}
            out = self.denoiser(xs, sigma.repeat(k), **cs).float()  # (k·B, ..., L, ...)
            for j, s in enumerate(group):
                acc.narrow(axis, s, self.length).add_(out[j * b : (j + 1) * b])
                count[s : s + self.length] += 1
        shape = [1] * x.ndim
        shape[axis] = total
        return (acc / count.reshape(shape)).to(x.dtype)

    def _cut(self, value: Any, x: Tensor, axis: int, group: list[int], b: int) -> Any:
        if not isinstance(value, Tensor) or value.ndim == 0:
            return value
        if value.ndim == x.ndim and value.shape[axis] == x.shape[axis]:
            return torch.cat([value.narrow(axis, s, self.length) for s in group])
        if value.shape[0] == b:
            return value.repeat(len(group), *([1] * (value.ndim - 1)))
        return value


@dataclass(frozen=True, eq=False)
class StaticThreshold:
    """A denoiser whose x0 prediction is clamped to a fixed range (static thresholding, Saharia et al. 2022,
    "Photorealistic Text-to-Image Diffusion Models with Deep Language Understanding", Imagen, Sec. 2.3).

    With the range of the training latents (per channel or per mel bin), a guided or under-trained model
    cannot predict values the data never had; for log-mel latents this keeps ``exp`` in the vocoder from
    turning an overshoot into a loud click.

    Attributes:
        denoiser: ``D(x, sigma, **cond) -> x0_hat``.
        lo: Lower bound, broadcastable to one sample's latent shape (e.g. ``[C, M, 1]``).
        hi: Upper bound, likewise.
    """

    denoiser: Callable[..., Tensor]
    lo: Tensor
    hi: Tensor

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        out = self.denoiser(x, sigma, **cond)
        lo = self.lo.to(device=out.device, dtype=out.dtype)
        hi = self.hi.to(device=out.device, dtype=out.dtype)
        return torch.maximum(torch.minimum(out, hi), lo)


def mask_channels(known: Tensor, mask: Tensor) -> Tensor:
    """The ``C + 1`` input channels of mask conditioning, ``[known · mask, mask]``.

    Masked conditioning (MCVD, Voleti et al. 2022, Sec. 3) with the mask given explicitly: a backbone built
    with ``cond_channels = C + 1`` sees which latents are known and their values (zeros elsewhere). Used by
    the training curriculum (:mod:`multidiff.train.masks`) and by generation with known media.

    Args:
        known: Clean latents ``[B, C, *spatial]`` (values where the mask is 0 are ignored).
        mask: Broadcastable to ``[B, 1, *spatial]``, 1 where known.

    Returns:
        ``[B, C + 1, *spatial]``.
    """
    if known.ndim < 3:
        raise ValueError(f"known latents must be [B, C, ...], got shape {tuple(known.shape)}")
    b, _, *spatial = known.shape
    if mask.ndim != known.ndim:
        raise ValueError(
            f"the mask {tuple(mask.shape)} needs the axes of the latents {tuple(known.shape)} ([B, 1, ...])"
        )
    m = mask.to(device=known.device, dtype=known.dtype).expand(b, 1, *spatial)  # (B, 1, *spatial)
    return torch.cat([known * m, m], dim=1)  # (B, C + 1, *spatial)
