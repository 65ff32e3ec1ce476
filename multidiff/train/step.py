"""One optimiser step, and the small pieces a training loop is made of.

* :func:`optimizer_step`: micro-batches with gradient accumulation (DDP all-reduce only on the last),
  bf16 autocast on CUDA, gradient clipping, the non-finite guard, the optimiser and the EMA update.
* :func:`diffusion_loss`: the denoising loss of :mod:`multidiff.core.losses` with σ and noise drawn per
  sample from the sample's own seed, so it is the same whatever the batch split.
* :func:`warmup_lr`, :class:`NonFiniteGuard`, :func:`autocast`, :func:`drop_labels`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from multidiff.core.losses import SigmaDistribution, denoising_loss
from multidiff.core.samplers import to_device_async
from multidiff.train.data import derive_seed
from multidiff.train.distributed import all_reduce_mean, no_sync, unwrap

__all__ = [
    "NonFiniteLossError",
    "NonFiniteGuard",
    "StepResult",
    "autocast",
    "warmup_lr",
    "set_lr",
    "sample_generators",
    "per_sample_draws",
    "drop_labels",
    "diffusion_loss",
    "optimizer_step",
]

# Salts separating the random streams drawn from one sample seed.
_NOISE, _LABEL_DROP = 0, 1


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss or gradient too many times in a row."""


@dataclass
class NonFiniteGuard:
    """Skip optimiser steps whose loss or gradient norm is not finite; stop after repeated failures.

    Attributes:
        max_consecutive: Raise :class:`NonFiniteLossError` after this many skipped steps in a row.
        skipped: Steps skipped so far (saved in checkpoints).
        consecutive: Current run of skipped steps.
    """

    max_consecutive: int = 20
    skipped: int = 0
    consecutive: int = 0

    def __post_init__(self) -> None:
        if self.max_consecutive < 1:
            raise ValueError(f"NonFiniteGuard.max_consecutive must be >= 1, got {self.max_consecutive}")

    def check(self, step: int, loss: float, grad_norm: float) -> bool:
        """True when the step may be applied; counts (and maybe raises) otherwise.

        Raises:
            NonFiniteLossError: After ``max_consecutive`` failures in a row.
        """
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.consecutive = 0
            return True
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"the loss or gradient was not finite for {self.consecutive} consecutive steps (last at step "
                f"{step}: loss={loss}, grad norm={grad_norm}; {self.skipped} steps skipped in all). Training "
                "stopped; lower the learning rate, raise the warm-up, clip gradients, or check the data "
                "for NaN/inf values. Checkpoints written before are intact."
            )
        return False

    def state_dict(self) -> dict[str, int]:
        """Counters for the checkpoint."""
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters from :meth:`state_dict`."""
        self.skipped, self.consecutive = int(state["skipped"]), int(state["consecutive"])


def autocast(device: torch.device, precision: str = "bf16") -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``precision == "bf16"``; float32 (no autocast) on the CPU or with ``"fp32"``."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up: ``base_lr · min(1, (step + 1) / warmup_steps)``, constant afterwards."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every param group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def sample_generators(seeds: Tensor | Sequence[int], salt: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from the sample's seed and a salt naming the random stream."""
    values = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
    return [torch.Generator().manual_seed(derive_seed(int(s), salt)) for s in values]


def per_sample_draws(
    seeds: Tensor | Sequence[int], shape: Sequence[int], sigma_dist: SigmaDistribution, device: torch.device
) -> tuple[Tensor, Tensor]:
    """σ [B] and standard normal noise [B, *shape] drawn from each sample's own seed.

    Sample k's values depend only on its seed, never on the batch it shares. σ is drawn on the CPU (B
    numbers); the noise is drawn where it is used: on an accelerator each sample's slice is filled by a
    generator of that device seeded from the sample's seed (no host work or copy per element), on the
    CPU by a CPU generator. The two devices' generators differ, so a run is reproducible on the same kind
    of device (resume, any number of ranks or accumulation steps), not across kinds.
    """
    gens = sample_generators(seeds, _NOISE)
    sigma = torch.cat([sigma_dist.sample(1, generator=g) for g in gens])  # (B,)
    device = torch.device(device)
    if device.type == "cpu":
        noise = torch.stack([torch.randn(tuple(shape), generator=g) for g in gens])  # (B, *shape)
        return sigma, noise
    values = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
    noise = torch.empty((len(values), *shape), device=device)  # (B, *shape)
    for k, s in enumerate(values):
        g = torch.Generator(device=device).manual_seed(derive_seed(int(s), _NOISE, 1))
        noise[k].normal_(generator=g)
    return to_device_async(sigma, device), noise


def drop_labels(labels: Tensor, seeds: Tensor | Sequence[int], p: float, null_label: int) -> Tensor:
    """Replace each label by ``null_label`` with probability ``p`` (classifier-free guidance training,
    Ho & Salimans 2022, Sec. 3.2), drawn from the sample's own seed."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"label dropout must lie in [0, 1), got {p}")
    if p == 0.0:
        return labels
    gens = sample_generators(seeds, _LABEL_DROP)
    drop = torch.tensor([bool(torch.rand((), generator=g) < p) for g in gens], device=labels.device)
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def diffusion_loss(
    denoiser: Callable[..., Tensor],
    x0: Tensor,
    sigma_dist: SigmaDistribution,
    *,
    seeds: Tensor | Sequence[int],
    weighting: str = "edm",
    sigma_data: float = 0.5,
    cond: dict[str, Any] | None = None,
    mask: Tensor | None = None,
    uncertainty: nn.Module | None = None,
) -> Tensor:
    """Per-sample denoising loss [B] (Karras et al. 2022, Eq. 8) with σ and noise from per-sample seeds.

    A thin layer over :func:`multidiff.core.losses.denoising_loss`.
    """
    if len(seeds) != x0.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {x0.shape[0]}")
    sigma, noise = per_sample_draws(seeds, x0.shape[1:], sigma_dist, x0.device)
    return denoising_loss(
        denoiser,
        x0,
        sigma_dist,
        weighting=weighting,
        sigma_data=sigma_data,
        uncertainty=uncertainty,
        mask=mask,
        cond=cond,
        sigma=sigma,
        noise=noise.to(x0.dtype),
    )


@dataclass(frozen=True)
class StepResult:
    """What one optimiser step did.

    Attributes:
        loss: Mean loss over the global batch (all ranks and micro-batches).
        grad_norm: Gradient norm before clipping.
        applied: False when the non-finite guard skipped the step.
        samples: Samples seen by this rank.
    """

    loss: float
    grad_norm: float
    applied: bool
    samples: int


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    *,
    step: int,
    device: torch.device,
    precision: str = "bf16",
    grad_clip: float | None = 1.0,
    ema: Any | None = None,
    guard: NonFiniteGuard | None = None,
) -> StepResult:
    """Accumulate gradients over ``micro_batches``, then clip, step and update the EMA.

    The loss of a micro-batch is ``loss_fn(model, batch)``, per sample [b] (or a scalar mean); each is
    scaled by 1/(number of micro-batches) so that, with DDP's mean over ranks, the gradient is the
    gradient of the mean loss over the global batch. Gradient all-reduce happens once, on the last
    micro-batch. The step is skipped (and counted by ``guard``) when the loss or the gradient norm is not
    finite on any rank.

    Args:
        model: The module (DDP-wrapped when distributed).
        optimizer: Its optimiser; gradients are zeroed at the end.
        micro_batches: The micro-batches of this step, for this rank (a list).
        loss_fn: ``(model, batch) -> loss`` per sample or scalar.
        step: 0-based index of this step (for the EMA warm-up and messages).
        device: Decides autocast: bf16 on CUDA, float32 on the CPU.
        precision: ``"bf16"`` or ``"fp32"``.
        grad_clip: Max global gradient norm (None: no clipping).
        ema: Updated with ``ema.update(module, step)`` after an applied step.
        guard: The non-finite guard (None: non-finite steps are still skipped, never counted).
    """
    batches = list(micro_batches)
    if not batches:
        raise ValueError("optimizer_step needs at least one micro-batch")
    total = torch.zeros((), device=device)
    samples = 0
    for i, batch in enumerate(batches):
        with no_sync(model, skip=i < len(batches) - 1), autocast(device, precision):
            loss = loss_fn(model, batch)
            samples += int(loss.shape[0]) if loss.ndim else 0
            loss = loss.float().mean() / len(batches)
            loss.backward()
        total += loss.detach()
    mean_loss = float(all_reduce_mean(total))
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
    grad_norm = float(norm)
    applied = (
        guard.check(step, mean_loss, grad_norm)
        if guard is not None
        else (math.isfinite(mean_loss) and math.isfinite(grad_norm))
    )
    if applied:
        optimizer.step()
        if ema is not None:
            ema.update(unwrap(model), step)
    optimizer.zero_grad(set_to_none=True)
    return StepResult(mean_loss, grad_norm, applied, samples)
