"""Stateless samplers over a σ grid.

Every sampler has one signature::

    sample_NAME(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, **opts) -> x

* ``denoiser`` is any callable ``D(x, sigma, **cond) -> x0_hat`` with σ a float32 tensor [B];
* ``x`` is the starting point at ``sigmas[0]``, unscaled (usually ``noise * sigmas[0]``);
* ``sigmas`` is a decreasing 1-D grid (from :mod:`multidiff.core.schedules`), normally ending in 0. It is
  read once into host floats, so the loop never synchronises with the device;
* ``generator`` is a ``torch.Generator`` or a list of one per sample (sample k then does not depend on
  the batch size);
* ``callback`` receives ``{"i", "x", "sigma", "sigma_next", "denoised"}`` after each step.

History (previous denoised values, step sizes) is a local variable; nothing is stored between calls.
The state x keeps the dtype it is given: pass float32 x (and let the denoiser's backbone run in bf16
under autocast) rather than bf16 x, whose rounding over many steps costs accuracy.
All samplers work in unscaled space, where the probability-flow ODE is dx/dσ = (x - D(x, σ))/σ
(Karras et al. 2022, Eq. 4 with s = 1); the scalings of VP and flow models live in the Denoiser.

:data:`SAMPLERS` maps names, including those users know from A1111 and ComfyUI, to the functions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Denoiser = Callable[..., Tensor]
Generator = torch.Generator | Sequence[torch.Generator] | None

__all__ = [
    "to_device_async",
    "SAMPLERS",
    "get_sampler",
    "noise_like",
    "ancestral_step",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_ddim",
    "sample_ddpm",
    "sample_heun",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_sde",
    "sample_unipc",
    "sample_dpm_adaptive",
]


# ---------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------


def _host(sigmas: Tensor | Sequence[float]) -> list[float]:
    """The grid as host floats (one transfer before the loop, none inside it)."""
    s = (
        sigmas.detach().to("cpu", torch.float64).tolist()
        if isinstance(sigmas, Tensor)
        else [float(v) for v in sigmas]
    )
    if len(s) < 2:
        raise ValueError(f"a σ grid needs at least 2 values, got {len(s)}")
    if any(b >= a for a, b in zip(s[:-1], s[1:])):
        raise ValueError(f"the σ grid must be strictly decreasing, got {s}")
    if s[-1] < 0:
        raise ValueError(f"σ must be >= 0, got {s[-1]}")
    return s


def _denoise(denoiser: Denoiser, x: Tensor, sigma: float, cond: dict | None) -> Tensor:
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return denoiser(x, x.new_full((x.shape[0],), sigma, dtype=dtype), **(cond or {}))


def noise_like(x: Tensor, generator: Generator = None) -> Tensor:
    """Standard normal noise shaped like x, from one generator or one generator per sample.

    Args:
        x: reference tensor [B, ...].
        generator: None (global RNG), a ``torch.Generator``, or a sequence of B generators.
    """
    if generator is None:
        return torch.randn_like(x)
    if isinstance(generator, torch.Generator):
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return to_device_async(noise, x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    devices = {g.device for g in generator}
    if len(devices) != 1:
        raise ValueError(f"per-sample generators must share one device, got {sorted(map(str, devices))}")
    noise = torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in generator]
    )
    return to_device_async(noise, x.device)  # one copy for the batch


def to_device_async(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device`` without blocking the host: a CPU tensor goes to CUDA through pinned memory.

    A copy from ordinary (pageable) host memory makes the host wait for the GPU, once per sampler step
    for noise drawn by CPU generators; through pinned memory the copy is queued like a kernel.
    """
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step σ -> σ' into a deterministic part to σ_down and fresh noise σ_up, σ_down² + σ_up² = σ'².

    σ_up = min(σ', η·σ'·sqrt(σ² - σ'²)/σ). With η = 1 this is the DDPM posterior q(x_σ' | x_σ, x0) (Ho et
    al. 2020, Eq. 7, "fixed small" variance) written in σ-space; general η is DDIM's σ_η (Song et al.
    2021, Eq. 16) divided by the signal scale.
    """
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * sigma_next * math.sqrt(max(sigma**2 - sigma_next**2, 0.0)) / sigma)
    return math.sqrt(sigma_next**2 - up**2), up


def _report(callback, i, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


# ---------------------------------------------------------------------------------------------------
# First order
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_euler_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps with ancestral noise (Song et al. 2021, DDIM with η; Ho et al. 2020 at η = 1).

    Each step moves deterministically to σ_down along the Euler / DDIM direction, then adds fresh noise of
    std σ_up (see :func:`ancestral_step`). η = 0 is plain Euler, which in σ-space is exactly DDIM.
    """
    s = _host(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond)
        down, up = ancestral_step(s[i], s[i + 1], eta)
        x = denoised + (down / s[i]) * (x - denoised)  # x + (σ_down - σ)·(x - D)/σ
        if up > 0:
            x = x + noise_like(x, generator) * (s_noise * up)
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 without the Heun step).

    x' = x + (σ' - σ)·(x - D)/σ = D + (σ'/σ)·(x - D). In σ-space this is DDIM with η = 0 (Song et al. 2021),
    and the Euler step of rectified flow (Liu et al. 2022) in t.
    """
    return sample_euler_ancestral(
        denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=0.0
    )


def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12) with stochasticity η; in σ-space the same update as Euler-ancestral."""
    return sample_euler_ancestral(
        denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=eta
    )


def sample_ddpm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2, posterior variance β̃): DDIM with η = 1."""
    return sample_euler_ancestral(
        denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=1.0
    )


# ---------------------------------------------------------------------------------------------------
# Heun (EDM Algorithm 2)
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's second-order method with optional churn (Karras et al. 2022, Algorithm 2).

    With ``s_churn > 0`` each step first raises σ to σ̂ = σ·(1 + γ), γ = min(S_churn/n, √2 - 1) for σ in
    [S_tmin, S_tmax], adding noise of std sqrt(σ̂² - σ²)·S_noise. The step to σ = 0 is a plain Euler step,
    so n steps cost 2n - 1 evaluations.
    """
    s = _host(sigmas)
    n = len(s) - 1
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= s[i] <= s_tmax else 0.0
        sigma_hat = s[i] * (1 + gamma)
        if gamma > 0:
            x = x + noise_like(x, generator) * (s_noise * math.sqrt(sigma_hat**2 - s[i] ** 2))
        denoised = _denoise(denoiser, x, sigma_hat, cond)
        d = (x - denoised) / sigma_hat
        x_next = x + (s[i + 1] - sigma_hat) * d
        if s[i + 1] > 0:  # second-order correction (Algorithm 2, lines 9-11)
            d_next = (x_next - _denoise(denoiser, x_next, s[i + 1], cond)) / s[i + 1]
            x_next = x + (s[i + 1] - sigma_hat) * 0.5 * (d + d_next)
        x = x_next
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


# ---------------------------------------------------------------------------------------------------
# DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Algorithm 2 and Sec. 5 for the SDE variant)
# ---------------------------------------------------------------------------------------------------
# λ = -log σ is the half log-SNR; h = λ' - λ = log(σ/σ'). With η > 0 the data-prediction SDE solver
# contracts by e^{-(1+η)h} and adds noise of std σ'·sqrt(1 - e^{-2ηh}); η = 0 is the ODE solver.


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    eta: float = 0.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, midpoint form); η > 0 gives the 2M-SDE variant.

    The second-order term uses the previous denoised value: D_eff = D + (D - D_prev)/(2r), r = h_prev/h.
    The step to σ = 0 is first order (it returns D), as in diffusers' ``lower_order_final``.
    """
    s = _host(sigmas)
    old_denoised, h_last = None, None
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond)
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i] / s[i + 1])
            h_eta = h * (1 + eta)
            decay = math.exp(-h_eta)  # = (σ'/σ)·e^{-ηh}
            x = decay * x + (1 - decay) * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x + (1 - decay) / (2 * r) * (denoised - old_denoised)
            if eta > 0:
                x = x + noise_like(x, generator) * (s_noise * s[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)))
            h_last = h
        old_denoised = denoised
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, Sec. 5): :func:`sample_dpmpp_2m` with η = 1 by default."""
    return sample_dpmpp_2m(
        denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=eta, s_noise=s_noise
    )


@torch.no_grad()
def sample_dpmpp_3m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    eta: float = 0.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(3M): third-order multistep exponential integrator in λ (Lu et al. 2022, Sec. 4), η for SDE.

    With step h_η = (1 + η)·h and φ₁(z) = (1 - e^{-z}) (times z), φ₂ = (e^{-z} - 1)/z + 1,
    φ₃ = φ₂/z - 1/2, the update is x' = e^{-h_η}·x + φ₁·D + φ₂·D₁ - φ₃·D₂ with D₁, D₂ the first and
    second divided differences of the last three denoised values in λ (lower order while warming up).

    D₂ must approximate h²·D'' (the Taylor term of the exponential integrator, ∫₀ʰ e^{τ-h} τ²/2 dτ =
    h²·(-φ₃)·D''), which is twice the second divided difference times h². k-diffusion's and diffusers'
    3M updates use the divided difference itself, which halves that term and leaves the method second
    order; the convergence test in ``tests/test_samplers.py`` measures third order here.
    """
    s = _host(sigmas)
    d_hist: list[Tensor] = []  # newest first
    h_hist: list[float] = []
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond)
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i] / s[i + 1])
            h_eta = h * (1 + eta)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi2 = math.expm1(-h_eta) / h_eta + 1
            if len(d_hist) >= 2:
                r0, r1 = h_hist[0] / h, h_hist[1] / h
                d1_0 = (denoised - d_hist[0]) / r0
                d1_1 = (d_hist[0] - d_hist[1]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = 2 * (d1_0 - d1_1) / (r0 + r1)  # ≈ h²·D'' (see the docstring)
                phi3 = phi2 / h_eta - 0.5
                x = x + phi2 * d1 - phi3 * d2
            elif len(d_hist) == 1:
                x = x + phi2 * (denoised - d_hist[0]) / (h_hist[0] / h)
            if eta > 0:
                x = x + noise_like(x, generator) * (s_noise * s[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)))
            h_hist = [h] + h_hist[:1]
        d_hist = [denoised] + d_hist[:1]
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


def sample_dpmpp_3m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(3M) SDE: :func:`sample_dpmpp_3m` with η = 1 by default."""
    return sample_dpmpp_3m(
        denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=eta, s_noise=s_noise
    )


# ---------------------------------------------------------------------------------------------------
# UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), data prediction
# ---------------------------------------------------------------------------------------------------


def _unipc_coefficients(rks: list[float], h: float, variant: str) -> tuple[list[float], float]:
    """Right-hand side b_k = k!·φ_{k+1}(-h)·(-h)^... / B(h) of the UniPC order conditions (Zhao et al. 2023,
    Eq. 12), for k = 1 … len(rks); returns (b, B(h)) with B(h) = -h ("bh1") or e^{-h} - 1 ("bh2")."""
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k = math.expm1(hh) / hh - 1  # φ₂-like term, h·φ_{k+1} recursion
    factorial = 1
    b = []
    for k in range(1, len(rks) + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return b, b_h


def _solve(rks: list[float], b: list[float]) -> list[float]:
    """Solve Σ_j rks[j]^(i-1)·ρ_j = b_i (a small Vandermonde system) on the host."""
    k = len(rks)
    R = torch.tensor([[r ** (i) for r in rks] for i in range(k)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b[:k], dtype=torch.float64)).tolist()


@torch.no_grad()
def sample_unipc(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
    lower_order_final: bool = True,
) -> Tensor:
    """UniPC-p multistep predictor (UniP) with the UniC corrector (Zhao et al. 2023, Algorithms 1-2, B(h) form).

    The corrector reuses the evaluation at the new point, so it costs no extra model call. The order is
    lowered while the history fills and on the last steps (as diffusers' ``lower_order_final``); the step
    to σ = 0 returns D. ``variant`` picks B(h) = h ("bh1") or e^h - 1 ("bh2", the paper's default for
    guided sampling). ``lower_order_final=False`` keeps the full order on the last steps of a grid that
    does not end in 0 (diffusers always lowers it).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}")
    s = _host(sigmas)
    n = len(s) - 1
    lam = [-math.log(v) if v > 0 else math.inf for v in s]
    hist: list[Tensor] = []  # denoised values, newest last, at grid indices idx
    idx: list[int] = []
    x_prev, prev_order = None, 0
    for i in range(n):
        denoised = _denoise(denoiser, x, s[i], cond)
        if corrector and x_prev is not None:
            # UniC: re-do the last step from x_prev with the new evaluation included (order prev_order + 1)
            j = idx[-1]
            h = lam[i] - lam[j]
            rks = [(lam[idx[-1 - k]] - lam[j]) / h for k in range(1, prev_order)] + [1.0]
            b, b_h = _unipc_coefficients(rks, h, variant)
            rho = [0.5] if prev_order == 1 else _solve(rks, b)
            m0 = hist[-1]
            x = x_prev * (s[i] / s[j]) - math.expm1(-h) * m0
            res = rho[-1] * (denoised - m0)
            for k in range(1, prev_order):
                res = res + rho[k - 1] * (hist[-1 - k] - m0) / rks[k - 1]
            x = x - b_h * res
        hist, idx = (hist + [denoised])[-order:], (idx + [i])[-order:]
        if s[i + 1] == 0:
            x = denoised
            _report(callback, i, x, s[i], s[i + 1], denoised)
            break
        this_order = min(order, n - i if lower_order_final else order, len(hist))
        h = lam[i + 1] - lam[i]
        x_prev, prev_order = x, this_order
        # UniP: exponential-integrator step plus the B(h)-weighted divided differences
        x = x * (s[i + 1] / s[i]) - math.expm1(-h) * denoised
        if this_order >= 2:
            rks = [(lam[idx[-1 - k]] - lam[i]) / h for k in range(1, this_order)]
            b, b_h = _unipc_coefficients(rks + [1.0], h, variant)
            rho = [0.5] if this_order == 2 else _solve(rks, b)
            res = 0.0
            for k in range(1, this_order):
                res = res + rho[k - 1] * (hist[-1 - k] - denoised) / rks[k - 1]
            x = x - b_h * res
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


# ---------------------------------------------------------------------------------------------------
# Adaptive step size (Lu et al. 2022, "DPM-Solver", Sec. 3.3 / Algorithm 4: DPM-Solver-12)
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_dpm_adaptive(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: dict | None = None,
    generator: Generator = None,
    callback=None,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    safety: float = 0.9,
    max_evals: int = 2000,
) -> Tensor:
    """Adaptive-step DPM-Solver++-12: first- and second-order data-prediction steps in λ = -log σ as an
    embedded pair; the step is accepted when the scaled difference E ≤ 1 and resized by safety·E^(-1/2).

    Integrates from ``sigmas[0]`` to the smallest non-zero σ of the grid (the other grid points are
    ignored), then returns D there if the grid ends in 0. Each accept/reject decision reads the error
    norm on the host: an adaptive solver cannot avoid that synchronisation. ``atol`` is in data units
    (the default suits data in [-1, 1]). The step size follows the worst sample of the batch, so unlike
    the fixed-grid samplers a sample here depends on what else is in its batch.
    """
    s = _host(sigmas)
    s_end = min(v for v in s if v > 0)
    lam, lam_end = -math.log(s[0]), -math.log(s_end)
    h = min(h_init, lam_end - lam)
    evals, i = 0, 0
    denoised = _denoise(denoiser, x, s[0], cond)
    evals += 1
    while lam < lam_end - 1e-12:
        if evals >= max_evals:
            raise RuntimeError(
                f"sample_dpm_adaptive: no convergence within max_evals={max_evals} evaluations"
            )
        sigma = math.exp(-lam)
        sigma_next, sigma_mid = math.exp(-(lam + h)), math.exp(-(lam + h / 2))
        x1 = denoised + (sigma_next / sigma) * (x - denoised)  # first order (DDIM)
        u = denoised + (sigma_mid / sigma) * (x - denoised)
        d_mid = _denoise(denoiser, u, sigma_mid, cond)  # midpoint: DPM-Solver++(2S), r = 1/2
        evals += 1
        x2 = d_mid + (sigma_next / sigma) * (x - d_mid)
        delta = torch.maximum(x1.abs(), x.abs()).mul_(rtol).add_(atol)
        err = float(((x2 - x1) / delta).pow(2).flatten(1).mean(1).sqrt().max())
        if err <= 1.0:
            x, lam = x2, lam + h
            denoised = _denoise(denoiser, x, math.exp(-lam), cond)
            evals += 1
            _report(callback, i, x, sigma, sigma_next, denoised)
            i += 1
        h = min(h * safety * max(err, 1e-10) ** -0.5, lam_end - lam, 2 * h + 1.0)
        h = max(h, 1e-6)
    if s[-1] == 0:
        x = denoised
    return x


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "unipc": sample_unipc,
    "unipc_3": functools.partial(sample_unipc, order=3),
    "dpm_adaptive": sample_dpm_adaptive,
    # names users know from A1111 / ComfyUI
    "euler_a": sample_euler_ancestral,
    "k_euler": sample_euler,
    "k_euler_a": sample_euler_ancestral,
    "k_heun": sample_heun,
    "dpm++_2m": sample_dpmpp_2m,
    "dpm++_2m_sde": sample_dpmpp_2m_sde,
    "dpm++_3m_sde": sample_dpmpp_3m_sde,
    "uni_pc": functools.partial(sample_unipc, order=3, variant="bh1"),
    "uni_pc_bh2": functools.partial(sample_unipc, order=3, variant="bh2"),
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """Look a sampler up by name (case-insensitive; spaces and dashes count as underscores)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[key]
