"""Where a training step spends the card: ``torch.profiler`` over one bf16 step per case (issue 13, 3).

The step is the one of ``train_throughput.py`` (forward under bf16 autocast on pre-made random tensors, MSE
loss, backward, AdamW fused on CUDA), built from its cases (imported, not copied):

* ``video-unet``: multidiff's ``video-B`` U-Net on 4x16x32x32 latents, batch 8, 77 context tokens
  (``unet_cases.case_video_unet``);
* ``mel-unet``: the ``mel-75M`` U-Net on 1x80x256 mels, batch 64 (``unet_cases.case_mel_unet``);
* ``dit-xl2``: DiT-XL/2 on 4x32x32 latents, batch 128 (``train_throughput.case_dit_xl2``);
* ``dit-b2``, ``video-dit-b2``: on request (``--only``).

For every case, side (multidiff by default; ``--sides diffusers`` profiles the reference model of the same
case) and mode (eager, ``torch.compile``d): ``--warmup`` steps (compilation happens here), ``--steps`` timed
steps without the profiler (their median is the step time), one profiler warm-up step, then ``--steps``
profiled steps, each synchronised. Reported per step: the top ops by self CUDA time from
``key_averages()`` (calls, ms, share of the step, category), the top kernels, per-category totals, the time
in which no kernel ran, achieved TFLOP/s (FLOPs counted as in ``train_throughput.py``) against
``--ceiling-tflops`` and the number of kernel launches. A kernel's category comes from its own name where
that says what it is (GEMM, convolution, flash attention, norm, Inductor's fused kernels), otherwise from
the op that launched it (``aten::copy_`` under ``aten::_to_copy`` is a cast, not a layout copy).

    python benchmarks/profile_steps.py --out OUT                                # all three cases, CUDA
    python benchmarks/profile_steps.py --only video-unet --only mel-unet --modes eager --out OUT --trace
    python benchmarks/profile_steps.py --only dit-xl2 --sides multidiff diffusers --out OUT
    python benchmarks/profile_steps.py --tiny --device cpu --modes eager --out OUT   # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gc
import inspect
import json
import platform
import re
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import (  # noqa: E402
    COMPILE_MODES,
    CUDNN_BENCHMARK_HELP,
    _sync,
    backend_settings,
    case_dit_b2,
    case_dit_xl2,
    case_video_dit_b2,
    count_flops,
    make_train_step,
)
from unet_cases import case_mel_unet, case_video_unet  # noqa: E402

CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "video-unet": case_video_unet,
    "mel-unet": case_mel_unet,
    "dit-xl2": case_dit_xl2,
    "dit-b2": case_dit_b2,
    "video-dit-b2": case_video_dit_b2,
}
DEFAULT_CASES = ("video-unet", "mel-unet", "dit-xl2")
SIDES = {"multidiff": ("ours", "step_ours"), "diffusers": ("ref", "step_ref")}
CATEGORIES = ("matmul/conv", "attention", "norm", "elementwise/cast", "copy/layout", "optimizer", "other")

# Kernel names that say what the kernel does; anything else (at::native's generic elementwise and copy
# kernels) takes the category of the op that launched it. First match wins, case-insensitive.
_LAYOUT_ONLY = r"(?:_?(?:clone|cat|permute|transpose|constant_pad_nd|pixel_shuffle|pixel_unshuffle|view|"
_LAYOUT_ONLY += r"unsqueeze|squeeze|expand|slice|select|index|copy|stack|unsafe_view|zeros|new_zeros|fill))+"
KERNEL_CATEGORIES = (
    ("optimizer", r"adam|multi_tensor_apply"),
    ("attention", r"flash|fmha|attention|sdpa|softmax"),
    ("norm", r"norm(?!al)|welford|rowwisemoments|computefusedparams"),
    # Inductor's kernels, named after the ops they fuse: "triton_poi_fused_convolution_0" is a bias add
    ("copy/layout", rf"triton_poi_fused{_LAYOUT_ONLY}_\d+$"),
    ("matmul/conv", r"triton_tem"),
    ("elementwise/cast", r"triton_poi"),
    ("other", r"triton_(?:red|per)"),  # reductions other than norms: bias gradients, the loss
    ("copy/layout", r"nchwtonhwc|nhwctonchw|transpose|permute"),
    ("matmul/conv", r"gemm|cutlass|xmma|nvjet|wgrad|dgrad|fprop|conv"),
)
# Op names (aten ops, autograd nodes, the kernel names Inductor records on the CPU side).
OP_CATEGORIES = (
    ("optimizer", r"adam|_foreach_|^optimizer\.step"),
    ("attention", r"attention|flash|sdpa|softmax"),
    ("norm", r"norm(?!al)|var_mean"),
    ("matmul/conv", r"(?<![a-z])(?:mm|addmm|bmm|baddbmm|matmul|linear)(?![a-z])|conv"),
    ("elementwise/cast", r"to_?copy|\(cast\)|convert_element_type"),
    (
        "copy/layout",
        r"copy|clone|contiguous|(?<![a-z])cat(?![a-z])|stack|permute|transpose|pad|shuffle|index|slice|"
        r"gather|scatter|upsample|repeat|expand|flip|roll|fill|zero|memcpy|memset|im2col|col2im|unfold",
    ),
    (
        "elementwise/cast",
        r"elementwise|(?<![a-z])(?:add|sub|mul|div|silu|gelu|sigmoid|tanh|exp|pow|sqrt|rsqrt|neg|where|"
        r"clamp|lerp|sin|cos|mse_loss|threshold|addcmul|addcdiv|maximum|minimum|abs|dropout|log)(?![a-z])",
    ),
)


def _first_match(name: str, patterns: tuple[tuple[str, str], ...]) -> str | None:
    low = name.lower()
    return next((cat for cat, pattern in patterns if re.search(pattern, low)), None)


def kernel_category(name: str) -> str | None:
    """The category a kernel's own name gives, or None for a generic kernel (the launching op decides)."""
    return _first_match(name, KERNEL_CATEGORIES)


def op_category(name: str) -> str:
    """The category of an op by its name (``other`` when nothing matches)."""
    return _first_match(name, OP_CATEGORIES) or "other"


def _event_category(evt: Any) -> str:
    """An op's category in context: under ``Optimizer.step`` it is the optimizer; ``aten::copy_`` under
    ``aten::_to_copy`` is a dtype cast, elsewhere a layout copy."""
    parent = evt.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        parent = parent.cpu_parent
    name = evt.name
    if name == "aten::copy_" and evt.cpu_parent is not None and evt.cpu_parent.name == "aten::_to_copy":
        name = "aten::copy_ (cast)"
    return op_category(name)


def _mix(times: dict[str, float]) -> str:
    """``matmul/conv`` for one category; ``norm 62% / copy/layout 38%`` when the first holds under 90%."""
    total = sum(times.values())
    if total <= 0:
        return "other"
    top = sorted(times.items(), key=lambda kv: -kv[1])
    if top[0][1] >= 0.9 * total:
        return top[0][0]
    return " / ".join(f"{c} {100 * t / total:.0f}%" for c, t in top[:2])


def _is_step_marker(name: str) -> bool:
    return name.startswith("ProfilerStep")  # "ProfilerStep#3", or "ProfilerStep*" once averaged


def _is_annotation(evt: Any) -> bool:
    """A ``record_function`` span (CPU or its GPU-side copy), not an op or a kernel."""
    kind = getattr(evt, "activity_type", None)
    return bool(evt.is_user_annotation) or kind in ("user_annotation", "gpu_user_annotation")


# --------------------------------------------------------------------------------------------------
# One step, timed and profiled
# --------------------------------------------------------------------------------------------------


def profile_step(
    train_step: Callable[[], torch.Tensor], device: str, *, steps: int, warmup: int, trace: Path | None
) -> dict[str, Any]:
    """Warm up, time ``steps`` unprofiled steps (median), then profile ``steps`` more after one profiler
    warm-up step. Returns the step time and, per step, device busy time, kernel launches and the per-op,
    per-kernel and per-category self device times (CPU time when profiling the CPU)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = train_step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = train_step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss.detach()).item():
        raise RuntimeError("training loss is not finite")
    peak = torch.cuda.max_memory_allocated() if cuda else 0

    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=steps, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule) as prof:
        for _ in range(steps + 1):
            train_step()
            _sync(device)
            prof.step()
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    return dict(
        step_s=statistics.median(times),
        warmup_s=warmup_s,
        peak_bytes=float(peak),
        **summarise(prof.events(), prof.key_averages(), cuda=cuda, steps=steps),
    )


def _activity(event) -> str:
    """The kind of a device event; torch 2.11's FunctionEvent has no ``activity_type`` (kernels are assumed)."""
    return getattr(event, "activity_type", None) or "kernel"


def summarise(events: Any, averages: Any, *, cuda: bool, steps: int) -> dict[str, Any]:
    """Per-step microseconds from the profiler's events: ``busy`` (all kernels, copies and memsets; on the
    CPU all op time), ``launches``, ``categories``, ``ops`` and ``kernels`` (name, calls, time, category).

    Each kernel goes to the op that launched it (its self device time) and to a category; GPU-side spans of
    ``record_function`` annotations are left out, so nothing is counted twice."""
    cpu_events = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    device_events = [e for e in events if e.device_type != DeviceType.CPU]
    annotations = {e.name for e in device_events if _is_annotation(e) or _is_step_marker(e.name)}
    categories = dict.fromkeys(CATEGORIES, 0.0)
    op_cats: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    kernel_cats: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    left_out: dict[str, float] = collections.defaultdict(float)  # annotation spans hung on ops
    for e in cpu_events:
        if cuda:
            for k in e.kernels:
                if k.name in annotations:
                    left_out[e.name] += k.duration
                    continue
                cat = kernel_category(k.name) or _event_category(e)
                categories[cat] += k.duration
                op_cats[e.name][cat] += k.duration
                kernel_cats[k.name][cat] += k.duration
        elif not _is_step_marker(e.name):
            cat = _event_category(e)
            categories[cat] += e.self_cpu_time_total
            op_cats[e.name][cat] += e.self_cpu_time_total

    launches = None
    if cuda:
        work = [
            e
            for e in device_events
            if e.name not in annotations and _activity(e) in ("kernel", "gpu_memcpy", "gpu_memset")
        ]
        busy = sum(e.device_time_total for e in work)
        launches = sum(
            1 for e in work if _activity(e) == "kernel" and not e.name.startswith(("Memcpy", "Memset"))
        )
        categories["other"] += max(busy - sum(categories.values()), 0.0)  # kernels no op claimed
    else:
        busy = sum(categories.values())

    ops, kernels = [], []
    for r in averages:
        if r.device_type == DeviceType.CPU and not _is_step_marker(r.key):
            us = r.self_device_time_total - left_out.get(r.key, 0.0) if cuda else r.self_cpu_time_total
            if us > 0:
                ops.append(
                    dict(name=r.key, calls=r.count / steps, us=us / steps, category=_mix(op_cats[r.key]))
                )
        elif cuda and r.device_type != DeviceType.CPU and r.key not in annotations:
            cats = kernel_cats.get(r.key) or {kernel_category(r.key) or "other": 1.0}
            kernels.append(
                dict(
                    name=r.key,
                    calls=r.count / steps,
                    us=r.self_device_time_total / steps,
                    category=_mix(cats),
                )
            )
    ops.sort(key=lambda o: -o["us"])
    kernels.sort(key=lambda k: -k["us"])
    return dict(
        busy_us=busy / steps,
        launches=None if launches is None else launches / steps,
        categories_us={c: t / steps for c, t in categories.items()},
        ops=ops,
        kernels=kernels,
    )


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


def run_case(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Profile one case: each side in ``args.sides``, each mode in ``args.modes``; one row each (a failed
    side or mode gives a row with ``error``). The idle model waits on the CPU."""
    case = CASES[name]
    kwargs = {"tiny": True} if args.tiny and "tiny" in inspect.signature(case).parameters else {}
    spec = case(args.device, **kwargs)
    if args.variant:  # multidiff's side is the case's variant of that name (train_throughput --variants)
        if args.variant not in spec.get("variants", {}):
            raise SystemExit(f"profile_steps: error: {name} has no variant {args.variant!r}")
        spec["ours"] = spec["variants"][args.variant]()
    for side in SIDES.values():
        spec[side[0]].to("cpu")
    rows = []
    for side in args.sides:
        model_key, step_key = SIDES[side]
        model, step = spec[model_key].to(args.device).train(), spec[step_key]
        flops = count_flops(model, step, args.device)
        for mode in args.modes:
            row: dict[str, Any] = dict(
                case=name,
                name=spec["name"],
                side=f"{side}:{args.variant}" if args.variant and side == "multidiff" else side,
                mode=f"{mode}:{args.compile_mode}" if mode == "compiled" and args.compile_mode else mode,
                model=type(model).__name__,
                params=sum(p.numel() for p in model.parameters()),
                batch=spec["batch"],
                gflop_per_step=flops / 1e9,
            )
            slug = f"{name}_{row['side']}_{row['mode']}".replace("/", "-").replace(":", "-")
            trace = args.out / f"trace_{slug}.json.gz" if args.trace else None
            try:
                torch._dynamo.reset()
                compiled = (args.compile_mode or True) if mode == "compiled" else False
                train_step = make_train_step(model, step, args.device, compile=compiled)
                r = profile_step(train_step, args.device, steps=args.steps, warmup=args.warmup, trace=trace)
            except Exception as exc:  # keep the other modes and cases; the row says what failed
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"[:400]
                rows.append(row)
                continue
            finally:
                model.zero_grad(set_to_none=True)
                gc.collect()
            step_ms = 1000 * r["step_s"]
            row.update(
                step_ms=step_ms,
                samples_per_s=spec["batch"] / r["step_s"],
                tflops=flops / r["step_s"] / 1e12,
                ceiling_tflops=args.ceiling_tflops,
                ceiling_share=flops / r["step_s"] / 1e12 / args.ceiling_tflops,
                warmup_s=r["warmup_s"],
                peak_gib=r["peak_bytes"] / 2**30,
                busy_ms=r["busy_us"] / 1000,
                launches_per_step=r["launches"],
                categories_ms={c: t / 1000 for c, t in r["categories_us"].items()},
                ops=[dict(o, ms=o.pop("us") / 1000) for o in r["ops"]],
                kernels=[dict(k, ms=k.pop("us") / 1000) for k in r["kernels"]],
                trace=None if trace is None else trace.name,
            )
            # Shares are of the step; profiler overhead can push CPU op time past the unprofiled step,
            # and then they are of the op time (nothing idle).
            row["reference_ms"] = max(step_ms, row["busy_ms"])
            row["idle_ms"] = row["reference_ms"] - row["busy_ms"]
            rows.append(row)
            top = sorted(row["categories_ms"].items(), key=lambda kv: -kv[1])[:3]
            print(
                f"  {spec['name']:<14} {row['side']:<9} {mode:<8} {step_ms:9.2f} ms/step {row['tflops']:7.1f} TFLOP/s "
                f"busy {100 * row['busy_ms'] / row['reference_ms']:5.1f}%  "
                + "  ".join(f"{c} {100 * t / row['reference_ms']:.0f}%" for c, t in top),
                flush=True,
            )
        model.to("cpu")
    del spec
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    """One decimal, or three significant digits below 10 (tiny CPU runs give small numbers)."""
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _md_name(name: str, width: int = 100) -> str:
    name = name if len(name) <= width else name[: width - 3] + "..."
    return "`" + name.replace("|", "\\|").replace("`", "'") + "`"


def overview(rows: list[dict[str, Any]]) -> str:
    """One line per case, side and mode: speed, use of the card and the category shares."""
    ceiling = next((r["ceiling_tflops"] for r in rows if "ceiling_tflops" in r), 0)
    lines = [
        f"| case | side | mode | batch | step ms | samples/s | TFLOP/s | % of {ceiling:g} | busy % | "
        "launches/step | peak GiB | " + " | ".join(f"{c} %" for c in CATEGORIES) + " | idle % |",
        "|---" * (12 + len(CATEGORIES)) + "|",
    ]
    for r in rows:
        head = f"| {r['name']} | {r['side']} | {r['mode']} | {r['batch']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error'][:150]} |" + " |" * (7 + len(CATEGORIES)))
            continue
        ref = r["reference_ms"]
        cpu = r["launches_per_step"] is None
        launches = "n/a" if cpu else f"{r['launches_per_step']:.0f}"
        peak = "n/a" if cpu else f"{r['peak_gib']:.2f}"
        lines.append(
            f"{head} {r['step_ms']:.2f} | {r['samples_per_s']:.1f} | {_num(r['tflops'])} | "
            f"{_num(100 * r['ceiling_share'])} | {100 * r['busy_ms'] / ref:.1f} | {launches} | {peak} | "
            + " | ".join(f"{100 * r['categories_ms'][c] / ref:.1f}" for c in CATEGORIES)
            + f" | {100 * r['idle_ms'] / ref:.1f} |"
        )
    return "\n".join(lines)


def section(r: dict[str, Any], top: int, top_kernels: int) -> str:
    """The category table, the top ops and (on CUDA) the top kernels of one profiled case and mode."""
    title = f"## {r['name']} · {r['side']} · {r['mode']}"
    if "error" in r:
        return f"{title}\n\nfailed: {r['error']}"
    dev = "CPU" if r["launches_per_step"] is None else "CUDA"
    ref = r["reference_ms"]
    idle = "GPU idle (no kernel running)" if dev == "CUDA" else "host outside ops"
    parts = [
        title,
        f"{r['model']}, {r['params'] / 1e6:.1f}M parameters, batch {r['batch']}, "
        f"{_num(r['gflop_per_step'])} GFLOP/step: {r['step_ms']:.2f} ms/step, {_num(r['tflops'])} TFLOP/s = "
        f"{_num(100 * r['ceiling_share'])}% of {r['ceiling_tflops']:g}; {dev} busy {r['busy_ms']:.2f} ms/step "
        f"({100 * r['busy_ms'] / ref:.1f}%)"
        + (
            ""
            if dev == "CPU"
            else f", {r['launches_per_step']:.0f} kernel launches/step, peak {r['peak_gib']:.2f} GiB"
        )
        + (f"; trace `{r['trace']}`" if r["trace"] else ""),
    ]
    lines = ["| category | ms/step | % of step |", "|---|---|---|"]
    for c in CATEGORIES:
        lines.append(f"| {c} | {r['categories_ms'][c]:.3f} | {100 * r['categories_ms'][c] / ref:.1f} |")
    lines.append(f"| {idle} | {r['idle_ms']:.3f} | {100 * r['idle_ms'] / ref:.1f} |")
    lines.append(f"| **step** | {ref:.3f} | 100.0 |")
    parts.append("\n".join(lines))
    lines = [
        f"Top {top} ops by self {dev} time",
        "",
        f"| # | op | category | calls/step | self {dev} ms/step | % of step |",
        "|---|---|---|---|---|---|",
    ]
    for i, o in enumerate(r["ops"][:top], 1):
        lines.append(
            f"| {i} | {_md_name(o['name'])} | {o['category']} | {o['calls']:g} | {o['ms']:.3f} | "
            f"{100 * o['ms'] / ref:.1f} |"
        )
    parts.append("\n".join(lines))
    if r["kernels"] and top_kernels > 0:
        lines = [
            f"Top {top_kernels} kernels",
            "",
            "| # | kernel | category | launches/step | ms/step | % of step |",
            "|---|---|---|---|---|---|",
        ]
        for i, k in enumerate(r["kernels"][:top_kernels], 1):
            lines.append(
                f"| {i} | {_md_name(k['name'])} | {k['category']} | {k['calls']:g} | {k['ms']:.3f} | "
                f"{100 * k['ms'] / ref:.1f} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


NOTE = (
    "Step: forward under bf16 autocast, MSE loss, backward, AdamW (fused on CUDA), as in "
    "`train_throughput.py`. Step time: median of the unprofiled, synchronised steps. Op, kernel and category "
    "times: self device time per step from `torch.profiler` over the profiled steps (compiled: after "
    "compilation); shares are of the step time, and the idle row is the part of the step in which no kernel "
    "ran (launch and host gaps). A kernel's category comes from its name when that is specific (GEMM, "
    "convolution, attention, norm, Inductor kernels), else from the op that launched it."
)


def write_results(
    out: Path, env: dict[str, str], rows: list[dict[str, Any]], top: int, top_kernels: int
) -> None:
    """Write ``profile.json`` (every row, all ops and kernels) and ``profile.md`` (overview, then a section
    per case, side and mode)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    parts = ["# Profile of one bf16 training step", f"`{json.dumps(env)}`", NOTE, overview(rows)]
    parts += [section(r, top, top_kernels) for r in rows]
    (out / "profile.md").write_text("\n\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only",
        action="extend",
        nargs="+",
        choices=list(CASES),
        help=f"cases (repeatable; default {' '.join(DEFAULT_CASES)})",
    )
    ap.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    ap.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        help="torch.compile mode of the compiled rows (default: torch's default)",
    )
    ap.add_argument("--sides", nargs="+", choices=list(SIDES), default=["multidiff"])
    ap.add_argument(
        "--variant", help="profile this variant of multidiff's model (e.g. channels_last, plain_ops)"
    )
    ap.add_argument("--steps", type=int, default=3, help="timed steps, then as many profiled steps")
    ap.add_argument("--warmup", type=int, default=3, help="steps before timing (compilation happens here)")
    ap.add_argument("--top", type=int, default=25, help="ops listed per case and mode")
    ap.add_argument("--top-kernels", type=int, default=15, help="kernels listed per case and mode (CUDA)")
    ap.add_argument(
        "--ceiling-tflops", type=float, default=790.0, help="matmul ceiling the TFLOP/s is put against"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="shrink every case (CPU smoke test)")
    ap.add_argument("--out", type=Path, help="write profile.md and profile.json here, after every case")
    ap.add_argument(
        "--trace", action="store_true", help="also a chrome trace per case and mode (needs --out)"
    )
    ap.add_argument("--cudnn-benchmark", action="store_true", help=CUDNN_BENCHMARK_HELP)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        ap.error(f"--steps and --warmup must be >= 1, got {args.steps} and {args.warmup}")
    if args.ceiling_tflops <= 0:
        ap.error(f"--ceiling-tflops must be > 0, got {args.ceiling_tflops}")
    if args.trace and args.out is None:
        ap.error("--trace needs --out")

    with backend_settings(args.cudnn_benchmark):
        return _profile(args, argv)


def _profile(args: argparse.Namespace, argv: list[str] | None) -> list[dict[str, Any]]:
    """Every case asked for, profiled, its rows written after each, then the overview printed."""
    import diffusers

    cuda = args.device.startswith("cuda")
    env = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": torch.cuda.get_device_name(args.device) if cuda else platform.processor() or "cpu",
        "python": platform.python_version(),
        "command": shlex.join(
            ["python", "benchmarks/profile_steps.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    print(json.dumps(env), flush=True)
    rows: list[dict[str, Any]] = []
    for name in [n for n in CASES if n in (args.only or DEFAULT_CASES)]:
        print(f"case {name}", flush=True)
        rows += run_case(name, args)
        if args.out is not None:  # after every case, so a run cut short keeps what it measured
            write_results(args.out, env, rows, args.top, args.top_kernels)
    print()
    print(overview(rows))
    return rows


if __name__ == "__main__":
    main()
