"""Exponential moving averages of model weights.

* :class:`EMA`: the classic EMA with a warm-up ramp on the decay.
* :class:`PowerEMA`, :func:`sigma_rel_to_gamma`, :func:`posthoc_ema`: the power-function EMA of
  EDM2 (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models",
  Sec. 3.1 and App. C), whose stored snapshots let any EMA length be reconstructed after training.

All averages are float32 copies held by the objects themselves; the training step is always an
argument, never a hidden counter. ``state_dict()`` returns a flat ``dict[str, Tensor]`` ready for
safetensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _named_state(model: nn.Module) -> tuple[list[str], list[Tensor], list[str], list[Tensor]]:
    """Names and tensors of a model's parameters and buffers, detached, in a fixed order."""
    params = [(n, p.detach()) for n, p in model.named_parameters()]
    bufs = [(n, b.detach()) for n, b in model.named_buffers()]
    return [n for n, _ in params], [p for _, p in params], [n for n, _ in bufs], [b for _, b in bufs]


def _check_names(expected: list[str], got: list[str], what: str) -> None:
    if expected != got:
        diff = sorted(set(expected) ^ set(got))[:5]
        raise ValueError(f"ema.py: the model's {what} differ from those the EMA was built with (e.g. {diff})")


def _load_into(dst: list[Tensor], names: list[str], state: Mapping[str, Tensor], prefix: str) -> None:
    for name, t in zip(names, dst):
        key = prefix + name
        if key not in state:
            raise ValueError(f"ema.py: state dict lacks {key!r}")
        if state[key].shape != t.shape:
            raise ValueError(
                f"ema.py: {key!r} has shape {tuple(state[key].shape)}, expected {tuple(t.shape)}"
            )
        t.copy_(state[key])


class EMA:
    """Exponential moving average of a model's parameters with a warm-up ramp.

    After optimiser step ``step`` (counting from 0) the average moves as
    ``ema <- decay_t * ema + (1 - decay_t) * param`` with
    ``decay_t = min(decay, (1 + step) / (10 + step))``, so early averages are not dominated by the
    random initialisation. Parameters are averaged in float32 whatever the model's dtype; buffers
    (e.g. normalisation statistics) are copied as they are.

    Args:
        model: The model to average; its current weights initialise the average.
        decay: The asymptotic decay in [0, 1).

    Raises:
        ValueError: If ``decay`` is outside [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema.py: decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.param_names, params, self.buffer_names, bufs = _named_state(model)
        self.params = [p.to(torch.float32, copy=True) for p in params]
        self.buffers = [b.clone() for b in bufs]

    def decay_at(self, step: int) -> float:
        """The decay used at optimiser step ``step`` (0-based): ``min(decay, (1+step)/(10+step))``."""
        if step < 0:
            raise ValueError(f"ema.py: step must be >= 0, got {step}")
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model``'s current weights.

        Args:
            model: The model being trained (same structure as at construction).
            step: The 0-based index of the optimiser step just taken.
        """
        p_names, params, b_names, bufs = _named_state(model)
        _check_names(self.param_names, p_names, "parameters")
        _check_names(self.buffer_names, b_names, "buffers")
        if self.params:
            # .float() is a no-op for float32 parameters, a cast for bf16/fp16 ones.
            torch._foreach_lerp_(self.params, [p.float() for p in params], 1.0 - self.decay_at(step))
        for dst, src in zip(self.buffers, bufs):
            dst.copy_(src)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights (and buffers) into ``model``, casting to its dtypes."""
        p_names, params, b_names, bufs = _named_state(model)
        _check_names(self.param_names, p_names, "parameters")
        _check_names(self.buffer_names, b_names, "buffers")
        for dst, src in zip(params + bufs, self.params + self.buffers):
            dst.copy_(src)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights keyed like ``model.state_dict()`` (float32 parameters)."""
        out = dict(zip(self.param_names, self.params))
        out.update(zip(self.buffer_names, self.buffers))
        return out

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load averages saved by :meth:`state_dict` (or any state dict of the same model)."""
        _load_into(self.params, self.param_names, state, "")
        _load_into(self.buffers, self.buffer_names, state, "")


# ---------------------------------------------------------------------------------------------
# Power-function EMA (EDM2)
# ---------------------------------------------------------------------------------------------

_GAMMA_AT_MAX = (math.sqrt(5.0) - 3.0) / 2.0  # where sigma_rel(gamma) peaks: gamma² + 3·gamma + 1 = 0


def gamma_to_sigma_rel(gamma: float) -> float:
    """Relative std of the power profile ``p(τ) ∝ τ^gamma`` on [0, t] (EDM2, Sec. 3.1).

    ``sigma_rel = sqrt((gamma + 1) / ((gamma + 2)² (gamma + 3)))``, the profile's standard deviation
    divided by its length t.
    """
    if not gamma > -1.0:
        raise ValueError(f"ema.py: gamma must be > -1, got {gamma}")
    return math.sqrt((gamma + 1.0) / ((gamma + 2.0) ** 2 * (gamma + 3.0)))


SIGMA_REL_MAX = gamma_to_sigma_rel(_GAMMA_AT_MAX)
"""The largest relative std a power profile can have (about 0.3003)."""


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power profile with relative std ``sigma_rel`` (EDM2, Sec. 3.1).

    Solves ``sigma_rel² = (gamma + 1) / ((gamma + 2)² (gamma + 3))`` for the largest root. The
    right side decreases for ``gamma >= (sqrt(5) - 3)/2``, so the root is found by bisection on
    ``[(sqrt(5) - 3)/2, 1/sigma_rel]`` (at ``gamma = 1/sigma_rel`` the right side is already below
    ``sigma_rel²``). EDM2 uses sigma_rel 0.05 (gamma ≈ 16.97) and 0.10 (gamma ≈ 6.94).

    Args:
        sigma_rel: Relative EMA length in (0, SIGMA_REL_MAX].

    Returns:
        gamma (float).

    Raises:
        ValueError: If ``sigma_rel`` is outside (0, SIGMA_REL_MAX].
    """
    if not 0.0 < sigma_rel <= SIGMA_REL_MAX:
        raise ValueError(f"ema.py: sigma_rel must lie in (0, {SIGMA_REL_MAX:.4f}], got {sigma_rel}")
    target = sigma_rel**2
    lo, hi = _GAMMA_AT_MAX, max(1.0 / sigma_rel, 1.0)
    for _ in range(200):  # the bracket halves each time: float64 precision well before 200
        mid = 0.5 * (lo + hi)
        if (mid + 1.0) / ((mid + 2.0) ** 2 * (mid + 3.0)) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, abs(lo)):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class EMASnapshot:
    """A stored power-function EMA: profile exponent, time and weights.

    Attributes:
        gamma: Exponent of the profile.
        t: Training time the snapshot was taken at (same unit as :meth:`PowerEMA.update`'s ``t``).
        state: The averaged weights keyed like ``model.state_dict()``, or a zero-argument callable
            that loads them (so :func:`posthoc_ema` holds one snapshot in memory at a time).
    """

    gamma: float
    t: float
    state: Mapping[str, Tensor] | Callable[[], Mapping[str, Tensor]]

    def __post_init__(self) -> None:
        if not self.gamma > -1.0:
            raise ValueError(f"ema.py: snapshot gamma must be > -1, got {self.gamma}")
        if not self.t > 0.0:
            raise ValueError(f"ema.py: snapshot t must be > 0, got {self.t}")

    def load(self) -> Mapping[str, Tensor]:
        """The snapshot's weights (calling the loader if ``state`` is one)."""
        return self.state() if callable(self.state) else self.state


class PowerEMA:
    """Power-function EMAs of EDM2 (Karras et al. 2024, Sec. 3.1 and App. C).

    Each profile with exponent gamma averages the training trajectory with weights ``∝ τ^gamma``
    over ``τ in (0, t]``, so its length grows in proportion to training time. The update after the
    step that brings time to ``t`` is ``ema <- beta_t · ema + (1 - beta_t) · param`` with
    ``beta_t = (1 - t_delta / t)^(gamma + 1)`` (EDM2, Sec. 3.1). For ``t_delta = 1`` this gives step
    τ the weight ``(τ^(gamma+1) - (τ-1)^(gamma+1)) / t^(gamma+1)``: exactly the continuous profile
    ``(gamma+1) τ^gamma / t^(gamma+1)`` integrated over that step, which is what
    :func:`posthoc_ema` assumes.

    Args:
        model: The model to average; its current weights initialise every profile.
        sigma_rels: Relative lengths of the tracked profiles (EDM2 tracks 0.05 and 0.10).

    Attributes:
        sigma_rels: The relative lengths, one per profile.
        gammas: The matching exponents.
        t: Training time of the last update (0 before any).
    """

    def __init__(self, model: nn.Module, sigma_rels: Sequence[float] = (0.05, 0.10)) -> None:
        if len(sigma_rels) == 0:
            raise ValueError("ema.py: sigma_rels must name at least one profile")
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.param_names, params, self.buffer_names, bufs = _named_state(model)
        self.params = [[p.to(torch.float32, copy=True) for p in params] for _ in self.gammas]
        self.buffers = [b.clone() for b in bufs]
        self.t = 0.0

    @staticmethod
    def beta(gamma: float, t: float, t_delta: float = 1.0) -> float:
        """``(1 - t_delta / t)^(gamma + 1)``, the decay of the update that brings time to ``t``."""
        return (1.0 - t_delta / t) ** (gamma + 1.0)

    @torch.no_grad()
    def update(self, model: nn.Module, t: float, t_delta: float = 1.0) -> None:
        """Fold ``model``'s current weights into every profile.

        Args:
            model: The model being trained (same structure as at construction).
            t: Training time after this step: the step count from 1, or images seen (EDM2).
            t_delta: Time covered by this step: 1 step, or the batch size in images.

        Raises:
            ValueError: If ``t_delta <= 0`` or ``t < t_delta``.
        """
        if not (t_delta > 0.0 and t >= t_delta):
            raise ValueError(f"ema.py: need t >= t_delta > 0, got t={t}, t_delta={t_delta}")
        p_names, params, b_names, bufs = _named_state(model)
        _check_names(self.param_names, p_names, "parameters")
        _check_names(self.buffer_names, b_names, "buffers")
        src = [p.float() for p in params]
        if src:
            for gamma, ema in zip(self.gammas, self.params):
                torch._foreach_lerp_(ema, src, 1.0 - self.beta(gamma, t, t_delta))
        for dst, b in zip(self.buffers, bufs):
            dst.copy_(b)
        self.t = float(t)

    def profile_state(self, index: int) -> dict[str, Tensor]:
        """The averaged weights of profile ``index``, keyed like ``model.state_dict()`` (no copy)."""
        out = dict(zip(self.param_names, self.params[index]))
        out.update(zip(self.buffer_names, self.buffers))
        return out

    @torch.no_grad()
    def copy_to(self, model: nn.Module, index: int = 0) -> None:
        """Write profile ``index``'s weights (and the buffers) into ``model``."""
        p_names, params, b_names, bufs = _named_state(model)
        _check_names(self.param_names, p_names, "parameters")
        _check_names(self.buffer_names, b_names, "buffers")
        for dst, src in zip(params + bufs, self.params[index] + self.buffers):
            dst.copy_(src)

    def snapshots(self) -> list[EMASnapshot]:
        """Copies of every profile at the current time, for the caller to store.

        Save each one's ``state`` with safetensors and keep ``gamma`` and ``t`` (e.g. in its
        metadata); :func:`posthoc_ema` rebuilds any EMA length from a series of them.

        Raises:
            ValueError: Before the first :meth:`update`.
        """
        if self.t <= 0.0:
            raise ValueError("ema.py: no snapshot before the first update (t = 0)")
        return [
            EMASnapshot(gamma, self.t, {k: v.clone() for k, v in self.profile_state(i).items()})
            for i, gamma in enumerate(self.gammas)
        ]

    def state_dict(self) -> dict[str, Tensor]:
        """Flat state: ``"{i}.{name}"`` per profile i and buffer, plus ``"t"`` (float64 scalar)."""
        out: dict[str, Tensor] = {}
        for i in range(len(self.gammas)):
            out.update({f"{i}.{k}": v for k, v in self.profile_state(i).items()})
        out["t"] = torch.tensor(self.t, dtype=torch.float64)
        return out

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load a state saved by :meth:`state_dict` with the same ``sigma_rels``."""
        if "t" not in state:
            raise ValueError("ema.py: state dict lacks 't'")
        for i, ema in enumerate(self.params):
            _load_into(ema, self.param_names, state, f"{i}.")
        _load_into(self.buffers, self.buffer_names, state, "0.")
        self.t = float(state["t"])


def _power_inner_products(gammas_a: Tensor, ts_a: Tensor, gammas_b: Tensor, ts_b: Tensor) -> Tensor:
    """Gram matrix of normalised power profiles ``p(τ) = (g+1) τ^g / t^(g+1)`` on ``[0, t]``.

    ``<p_i, p_j> = (g_i+1)(g_j+1) m^(g_i+g_j+1) / ((g_i+g_j+1) t_i^(g_i+1) t_j^(g_j+1))`` with
    ``m = min(t_i, t_j)``, evaluated in log space (float64) so large exponents cannot overflow.
    """
    gi, ti = gammas_a[:, None], ts_a[:, None]
    gj, tj = gammas_b[None, :], ts_b[None, :]
    m = torch.minimum(ti, tj)
    log = (
        torch.log((gi + 1) * (gj + 1) / (gi + gj + 1))
        + (gi + gj + 1) * torch.log(m)
        - (gi + 1) * torch.log(ti)
        - (gj + 1) * torch.log(tj)
    )
    return torch.exp(log)


def posthoc_ema_coefficients(
    gammas: Sequence[float], ts: Sequence[float], target_gamma: float, target_t: float
) -> Tensor:
    """Least-squares weights that combine stored power EMAs into another one (EDM2, Sec. 3.2 and App. C).

    Finds x minimising ``|| Σ_i x_i p_i - p_target ||²`` in L2 over τ, with ``p_i`` the profile of
    snapshot i (exponent ``gammas[i]`` ending at ``ts[i]``), by solving the normal equations
    ``A x = b`` with the closed-form inner products of :func:`_power_inner_products`. Times are
    divided by their maximum first (this scales A and b alike) and the system is solved in float64
    with a pseudo-inverse-style least squares, tolerant of near-duplicate snapshots.

    Args:
        gammas: Exponent of each snapshot.
        ts: Time of each snapshot (> 0).
        target_gamma: Exponent of the wanted profile.
        target_t: Time the wanted profile ends at (> 0).

    Returns:
        Coefficients [N] in float64, one per snapshot.
    """
    if len(gammas) != len(ts) or len(gammas) == 0:
        raise ValueError(
            f"ema.py: need as many gammas as ts (and at least one), got {len(gammas)} and {len(ts)}"
        )
    g = torch.tensor(list(gammas), dtype=torch.float64)
    t = torch.tensor(list(ts), dtype=torch.float64)
    if bool((t <= 0).any()) or bool((g <= -1).any()) or not target_t > 0 or not target_gamma > -1:
        raise ValueError("ema.py: times must be > 0 and gammas > -1")
    scale = float(max(t.max().item(), target_t))
    t = t / scale
    g_r = torch.tensor([float(target_gamma)], dtype=torch.float64)
    t_r = torch.tensor([float(target_t) / scale], dtype=torch.float64)
    a = _power_inner_products(g, t, g, t)  # (N, N)
    b = _power_inner_products(g, t, g_r, t_r)  # (N, 1)
    rcond = torch.finfo(torch.float64).eps * a.shape[0]
    return torch.linalg.lstsq(a, b, rcond=rcond, driver="gelsd").solution[:, 0]


@torch.no_grad()
def posthoc_ema(
    snapshots: Sequence[EMASnapshot], target_sigma_rel: float, *, t: float | None = None
) -> dict[str, Tensor]:
    """Reconstruct a power-function EMA of any length from stored snapshots (EDM2, Sec. 3.2, App. C).

    The weights are ``Σ_i x_i · snapshot_i`` with x from :func:`posthoc_ema_coefficients`:
    since each snapshot is the training trajectory integrated against its profile, a linear
    combination of snapshots integrates the trajectory against the same combination of profiles,
    which least squares makes as close as possible to the target profile. Reconstruction is good
    when the snapshots are frequent (EDM2 stores two profiles every 8M images) and the target
    lies between the tracked lengths.

    Floating-point tensors are combined in float64 and returned in float32; other tensors (e.g.
    integer counters) are taken from the latest snapshot. Snapshots are loaded one at a time.

    Args:
        snapshots: Stored snapshots (any mix of exponents and times).
        target_sigma_rel: Relative length of the wanted EMA.
        t: Time the wanted EMA ends at; defaults to the latest snapshot's time. Snapshots after
            ``t`` still take part (their profiles overlap [0, t]).

    Returns:
        The reconstructed weights keyed like ``model.state_dict()``.
    """
    if len(snapshots) == 0:
        raise ValueError("ema.py: posthoc_ema needs at least one snapshot")
    target_t = max(s.t for s in snapshots) if t is None else float(t)
    coeffs = posthoc_ema_coefficients(
        [s.gamma for s in snapshots], [s.t for s in snapshots], sigma_rel_to_gamma(target_sigma_rel), target_t
    ).tolist()
    latest = max(range(len(snapshots)), key=lambda i: snapshots[i].t)
    out: dict[str, Tensor] = {}
    keys: list[str] | None = None
    for i, (snap, c) in enumerate(zip(snapshots, coeffs)):
        state = snap.load()
        if keys is None:
            keys = list(state)
        elif sorted(state) != sorted(keys):
            raise ValueError(f"ema.py: snapshot {i} (t={snap.t}) holds different tensors from snapshot 0")
        for k, v in state.items():
            if v.is_floating_point():
                if k in out:
                    out[k].add_(v.to(torch.float64), alpha=c)
                else:
                    out[k] = v.to(torch.float64) * c
            elif i == latest:
                out[k] = v.clone()
    return {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in out.items()}
