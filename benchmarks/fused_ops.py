"""Each fused op of ``multidiff.nn.fused`` against its plain PyTorch ops, forward and backward (issue 13).

The op alone, at the shapes it meets in the bar's models, in eager mode (the kernels give way to
Inductor under ``torch.compile``), timed two ways:

- wall: the median time of one call, synchronised before and after. It includes the host's work (Python,
  autograd, the launches), which a GPU-bound model hides behind other kernels; an op alone does not.
- GPU (CUDA only): the time the GPU spends in the call's kernels, memory copies and fills (profiler,
  summed over ``--runs`` calls), which is what the op costs inside a GPU-bound step such as DiT-XL/2's.

For each: the plain ops' time over the fused op's (the gain); also the effective bandwidth of the fused
forward (bytes it must read and write over its time; the H200's HBM3e peak is 4.8 TB/s) and the largest
difference from the plain result. Inputs in bf16, as under bf16 autocast.

    python benchmarks/fused_ops.py --out OUT              # on the device
    TRITON_INTERPRET=1 python benchmarks/fused_ops.py --tiny --device cpu   # CPU smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multidiff.nn.fused import (  # noqa: E402
    apply_rotary,
    gated_residual,
    layer_norm,
    ln_modulate,
    modulate,
    rms_rotary,
    rotary,
)
from multidiff.nn.layers import GroupNorm, rotary_tables  # noqa: E402

Case = dict[str, Any]


def _cases(device: torch.device, tiny: bool) -> list[Case]:
    """(name, shape note, plain op, fused op, inputs, bytes moved by one fused forward)."""
    dt = torch.bfloat16
    g = torch.Generator(device).manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device).to(dt).requires_grad_()

    B, L, D = (2, 8, 24) if tiny else (128, 256, 1152)  # DiT-XL/2, 256 px, batch 128
    x, ada, h = rand(B, L, D), rand(B, 1, 2 * D), rand(B, L, D)
    shift, scale = ada.chunk(2, dim=-1)
    cases: list[Case] = [
        dict(
            name="adaLN LayerNorm + modulation",
            shape=f"DiT-XL/2 tokens ({B}, {L}, {D})",
            plain=lambda: modulate(layer_norm(x, 1e-6), shift, scale).to(dt),
            fused=lambda: ln_modulate(x, shift, scale, 1e-6),
            inputs=[x, ada],
            bytes=2 * x.numel() * 2,
        ),
        dict(
            name="adaLN-Zero gate + residual",
            shape="same, gate (B, 1, D)",
            plain=lambda: torch.addcmul(x, shift, h),
            fused=lambda: gated_residual(x, shift, h),
            inputs=[x, ada, h],
            bytes=3 * x.numel() * 2,
        ),
    ]
    Bv, nH, F, S, Dh = (1, 2, 4, 6, 8) if tiny else (16, 12, 16, 256, 64)  # VideoDiT-B/2, temporal blocks
    q = rand(Bv, nH * S, F, Dh)
    cos, sin = rotary_tables((F,), Dh, device=device)
    w = (1 + 0.1 * torch.randn(Dh, generator=g, device=device)).requires_grad_()
    cases += [
        dict(
            name="rotary embedding",
            shape=f"video DiT-B/2 queries ({Bv}, {nH * S}, {F}, {Dh})",
            plain=lambda: apply_rotary(q, cos, sin),
            fused=lambda: rotary(q, cos, sin),
            inputs=[q],
            bytes=2 * q.numel() * 2,
        ),
        dict(
            name="QK-norm + rotary embedding",
            shape=f"same, RMSNorm gain ({Dh},)",
            plain=lambda: apply_rotary(torch.nn.functional.rms_norm(q, (Dh,), w.to(dt), 1e-6), cos, sin),
            fused=lambda: rms_rotary(q, w, 1e-6, cos, sin),
            inputs=[q, w],
            bytes=2 * q.numel() * 2,
        ),
    ]
    levels = [(2, 16, 8, 8)] if tiny else [(128, 128, 32, 32), (128, 256, 16, 16), (128, 512, 8, 8)]
    for N, C, H, W in levels:  # the video-B U-Net's levels: batch 8 x 16 frames
        # In the activations' dtype, as under autocast in a model (PyTorch's GroupNorm refuses bf16
        # activations with float32 weights outside autocast).
        norm = GroupNorm(8 if tiny else 32, C).to(device=device, dtype=dt)
        plain_norm = copy.deepcopy(norm)
        plain_norm.fused = False
        emb = rand(N, 2 * C, 1, 1)
        s, t = emb.chunk(2, dim=1)
        for fmt, name in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "channels-last")):
            xg = torch.randn(N, C, H, W, generator=g, device=device).to(dt).to(memory_format=fmt)
            xg.requires_grad_()
            cases.append(
                dict(
                    name=f"GroupNorm + modulation + SiLU, {name}",
                    shape=f"U-Net level ({N}, {C}, {H}, {W})",
                    plain=lambda xg=xg, n=plain_norm, s=s, t=t: n.silu(xg, s, t),
                    fused=lambda xg=xg, n=norm, s=s, t=t: n.silu(xg, s, t),
                    inputs=[xg, emb],
                    bytes=3 * xg.numel() * 2,  # statistics pass, then read and write
                )
            )
    return cases


def _time(fn: Callable[[], Any], device: torch.device, runs: int) -> float:
    """Median seconds of ``fn`` over ``runs`` calls, after two, synchronised."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _gpu_time(fn: Callable[[], Any], device: torch.device, runs: int) -> float | None:
    """Seconds the GPU spends per call of ``fn`` in kernels, copies and fills (``profile_steps.py``'s busy
    time: the profiler's device events, summed over ``runs`` calls after two); None off CUDA."""
    if device.type != "cuda":
        return None
    from profile_steps import summarise  # this folder's; imported only here (it loads the models' cases)
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    return 1e-6 * summarise(prof.events(), prof.key_averages(), cuda=True, steps=runs)["busy_us"]


def run(case: Case, device: torch.device, runs: int) -> dict[str, Any]:
    """Time one case both ways, forward and forward + backward, wall and GPU; compare the two results."""
    grad = torch.randn_like(case["plain"]())

    def fwd_bwd(op: Callable[[], torch.Tensor]) -> Callable[[], Any]:
        return lambda: torch.autograd.grad(op(), case["inputs"], grad)

    row: dict[str, Any] = dict(name=case["name"], shape=case["shape"])
    for way in ("plain", "fused"):
        for part, fn in (("fwd", case[way]), ("fwd_bwd", fwd_bwd(case[way]))):
            with torch.no_grad() if part == "fwd" else contextlib.nullcontext():
                row[f"{way}_{part}_us"] = 1e6 * _time(fn, device, runs)
                gpu = _gpu_time(fn, device, runs)
            row[f"{way}_{part}_gpu_us"] = None if gpu is None else 1e6 * gpu
    y, r = case["fused"](), case["plain"]()
    row["max_abs_diff"] = (y.float() - r.float()).abs().max().item()
    for part in ("fwd", "fwd_bwd"):
        row[f"gain_{part}"] = row[f"plain_{part}_us"] / row[f"fused_{part}_us"]
        gpu = row[f"fused_{part}_gpu_us"]
        row[f"gain_{part}_gpu"] = None if gpu is None else row[f"plain_{part}_gpu_us"] / gpu
    row["fused_fwd_tb_s"] = case["bytes"] / (row["fused_fwd_us"] * 1e-6) / 1e12
    gpu = row["fused_fwd_gpu_us"]
    row["fused_fwd_gpu_tb_s"] = None if gpu is None else case["bytes"] / (gpu * 1e-6) / 1e12
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows: each time as wall / GPU µs (GPU: n/a off CUDA)."""

    def pair(r: dict[str, Any], wall: str, gpu: str, fmt: str, unit: str = "") -> str:
        g = r.get(gpu)
        return f"{r[wall]:{fmt}}{unit} / " + ("n/a" if g is None else f"{g:{fmt}}{unit}")

    lines = [
        "| op | shape | plain fwd µs | fused fwd µs | gain | plain fwd+bwd µs | fused fwd+bwd µs | gain | "
        "fused fwd TB/s | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            pair(r, "plain_fwd_us", "plain_fwd_gpu_us", ".1f"),
            pair(r, "fused_fwd_us", "fused_fwd_gpu_us", ".1f"),
            pair(r, "gain_fwd", "gain_fwd_gpu", ".2f", "x"),
            pair(r, "plain_fwd_bwd_us", "plain_fwd_bwd_gpu_us", ".1f"),
            pair(r, "fused_fwd_bwd_us", "fused_fwd_bwd_gpu_us", ".1f"),
            pair(r, "gain_fwd_bwd", "gain_fwd_bwd_gpu", ".2f", "x"),
            pair(r, "fused_fwd_tb_s", "fused_fwd_gpu_tb_s", ".2f"),
        ]
        lines.append(f"| {r['name']} | {r['shape']} | {' | '.join(cells)} | {r['max_abs_diff']:.2g} |")
    return "\n".join(lines)


def tuned_settings() -> dict[str, Any]:
    """The launch settings each autotuned kernel picked (per key: width, dtypes) and the times it compared
    for its last key, in ms (none under the interpreter, where only the first setting is kept)."""
    try:
        import triton

        from multidiff.nn import _triton_kernels as K
    except ImportError:
        return {}
    return {
        name: {
            "picked": {str(key): str(config) for key, config in tuner.cache.items()},
            # a setting that failed to compile or launch is timed inf: None in the JSON
            "timings_ms": {
                str(c): t[0] if math.isfinite(t[0]) else None
                for c, t in getattr(tuner, "configs_timings", {}).items()
            },
        }
        for name, tuner in vars(K).items()
        if isinstance(tuner, triton.runtime.Autotuner)
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, default=20, help="timed calls per op and way (median)")
    ap.add_argument(
        "--tiny", action="store_true", help="tiny shapes (CPU smoke test under TRITON_INTERPRET=1)"
    )
    ap.add_argument("--out", type=Path, help="write fused_ops.json and fused_ops.md here")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs must be >= 1, got {args.runs}")
    device = torch.device(args.device)
    rows = []
    for case in _cases(device, args.tiny):
        rows.append(run(case, device, args.runs))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    env = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
    }
    tuned = tuned_settings()
    picked = "; ".join(f"{n}: {', '.join(t['picked'].values())}" for n, t in tuned.items() if t["picked"])
    note = "Each time: wall (one call, synchronised) / GPU (the call's kernels, copies and fills)."
    text = f"{json.dumps(env)}\n\n{table(rows)}\n\n{note}\n\nAutotuned launch settings picked: {picked or 'none'}\n"
    print(f"\n{text}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fused_ops.json").write_text(
            json.dumps({"env": env, "rows": rows, "tuned": tuned}, indent=2)
        )
        (args.out / "fused_ops.md").write_text(text)
    return rows


if __name__ == "__main__":
    main()
