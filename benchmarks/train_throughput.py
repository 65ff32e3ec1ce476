"""Training-step throughput of multidiff backbones against their diffusers counterparts.

One training step = forward under bf16 autocast on pre-made random tensors, MSE loss to a random
target, backward, AdamW step (fused on CUDA). For every case both models run in the same process,
eager and ``torch.compile``d; the table gives samples/s (median over the timed steps), achieved
TFLOP/s (FLOPs of one forward+backward counted once with ``torch.utils.flop_counter.FlopCounterMode``),
peak memory and the speed ratio ours/diffusers.

A case is a function ``case(device) -> dict(name, batch, ours, ref, step_ours, step_ref)``; cases that
also take ``tiny`` get ``tiny=True`` under ``--tiny`` (a CPU smoke test). U-Net cases come from
``benchmarks/unet_cases.py`` (``UNET_CASES``) when that file exists.

    python benchmarks/train_throughput.py --out results/           # all cases, CUDA
    python benchmarks/train_throughput.py --only DiT-B/2 --no-compile
    python benchmarks/train_throughput.py --device cpu --tiny --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import inspect
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from multidiff.nn.dit import DIT_PRESETS, DiT, DiTConfig  # noqa: E402

Case = Callable[..., dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# DiT cases
# --------------------------------------------------------------------------------------------------


def _image_dit_case(
    name: str, preset: str, heads: int, head_dim: int, depth: int, batch: int, device: str, tiny: bool
) -> dict[str, Any]:
    from diffusers import DiTTransformer2DModel

    size, classes = 32, 1000
    cfg = DIT_PRESETS[preset]
    if tiny:
        heads, head_dim, depth, batch, size, classes = 2, 16, 2, 2, 8, 10
        cfg = DiTConfig(
            in_channels=4,
            out_channels=8,
            patch=(2, 2),
            width=32,
            depth=2,
            heads=2,
            num_classes=10,
            pos_embed="sincos",
        )
    ours = DiT(cfg).to(device)
    ref = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=4,
        out_channels=8,
        num_layers=depth,
        sample_size=size,
        patch_size=2,
        num_embeds_ada_norm=classes,
    ).to(device)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 4, size, size, device=device, generator=g)
    target = torch.randn(batch, 8, size, size, device=device, generator=g)
    t = torch.randint(0, 1000, (batch,), device=device, generator=g)
    y = torch.randint(0, classes, (batch,), device=device, generator=g)
    c_noise = t.float()

    def step_ours(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, c_noise, labels=y).float(), target)

    def step_ref(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, t, class_labels=y).sample.float(), target)

    # Alternatives timed with --variants. A float32 residual stream cost 6% of compiled throughput and
    # 2.4 GiB on the H100 (NOTES_backbones.md, run 1).
    variants = _variants(cfg)
    if preset == "DiT-B/2":
        variants["fp32_residual"] = lambda: DiT(dataclasses.replace(cfg, fp32_residual=True))
    return dict(
        name=name, batch=batch, ours=ours, ref=ref, step_ours=step_ours, step_ref=step_ref, variants=variants
    )


def _variants(cfg: DiTConfig) -> dict[str, Callable[[], nn.Module]]:
    """The DiT without its fused eager kernels, with cuDNN's or flash SDPA first, and with the recipes'
    float8 training (``--fp8``; CUDA of compute capability 8.9 or more, torchao) (--variants)."""
    from multidiff.train.fp8 import to_float8_training

    order = ("cudnn", "flash", "efficient", "math")
    return {
        "plain_ops": lambda: DiT(dataclasses.replace(cfg, fused_kernels=False)),
        "sdpa_cudnn": lambda: DiT(dataclasses.replace(cfg, attention_backends=order)),
        "sdpa_flash": lambda: DiT(dataclasses.replace(cfg, attention_backends=("flash", *order))),
        "fp8_tensorwise": lambda: to_float8_training(DiT(cfg), "tensorwise"),
        "fp8_rowwise": lambda: to_float8_training(DiT(cfg), "rowwise"),
    }


def case_dit_b2(device: str, tiny: bool = False) -> dict[str, Any]:
    """DiT-B/2 on 4x32x32 latents, batch 256, vs diffusers DiTTransformer2DModel."""
    return _image_dit_case("DiT-B/2", "DiT-B/2", 12, 64, 12, 256, device, tiny)


def case_dit_xl2(device: str, tiny: bool = False) -> dict[str, Any]:
    """DiT-XL/2 on 4x32x32 latents, batch 128, vs diffusers DiTTransformer2DModel."""
    return _image_dit_case("DiT-XL/2", "DiT-XL/2", 16, 72, 28, 128, device, tiny)


def case_video_dit_b2(device: str, tiny: bool = False) -> dict[str, Any]:
    """Video DiT-B/2 (factorised, 12 spatial + 12 temporal blocks) on 4x16x32x32, batch 16, vs Latte."""
    from diffusers import LatteTransformer3DModel

    heads, head_dim, layers, batch, frames, size = 12, 64, 12, 16, 16, 32
    if tiny:
        heads, head_dim, layers, batch, frames, size = 2, 16, 1, 2, 4, 8
    width = heads * head_dim
    cfg = DiTConfig(
        in_channels=4,
        out_channels=4,
        patch=(1, 2, 2),
        width=width,
        depth=2 * layers,
        heads=heads,
        attention="factorised",
        pos_embed="sincos",
    )
    ours = DiT(cfg).to(device)
    # Same work as ours: tanh-GELU MLP (ratio 4), no cross-attention, timestep conditioning only.
    # Latte's forward needs caption tokens; one 8-wide token feeds its (otherwise unused) projection.
    ref = LatteTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        attention_bias=True,
        sample_size=size,
        patch_size=2,
        activation_fn="gelu-approximate",
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=8,
        video_length=frames,
    ).to(device)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 4, frames, size, size, device=device, generator=g)
    target = torch.randn(batch, 4, frames, size, size, device=device, generator=g)
    t = torch.randint(0, 1000, (batch,), device=device, generator=g)
    caption = torch.randn(batch, 1, 8, device=device, generator=g)
    c_noise = t.float()

    def step_ours(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, c_noise).float(), target)

    def step_ref(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, t, encoder_hidden_states=caption).sample.float(), target)

    return dict(
        name="VideoDiT-B/2",
        batch=batch,
        ours=ours,
        ref=ref,
        step_ours=step_ours,
        step_ref=step_ref,
        variants=_variants(cfg),
    )


case_dit_b2.case_name = "DiT-B/2"  # type: ignore[attr-defined]
case_dit_xl2.case_name = "DiT-XL/2"  # type: ignore[attr-defined]
case_video_dit_b2.case_name = "VideoDiT-B/2"  # type: ignore[attr-defined]
DIT_CASES: list[Case] = [case_dit_b2, case_dit_xl2, case_video_dit_b2]


def case_name(case: Case) -> str:
    """The name ``--only`` matches: the function's ``case_name`` attribute, else its ``__name__``."""
    return str(getattr(case, "case_name", case.__name__))


def all_cases() -> list[Case]:
    """DiT cases, then the U-Net cases of ``benchmarks/unet_cases.py`` if that file exists."""
    cases = list(DIT_CASES)
    if (Path(__file__).resolve().parent / "unet_cases.py").is_file():
        from unet_cases import UNET_CASES  # type: ignore[import-not-found]

        cases += list(UNET_CASES)
    return cases


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flop_counter() -> Any:
    """``FlopCounterMode`` (2 FLOPs per multiply-add) that also counts ``addmm_``, which it leaves out:
    ``multidiff.nn.fused.split_linear`` sums the parts of a packed projection's input gradient that way
    (call 22 counted 86.8 of DiT-XL/2's 91.6 TFLOP a step without it)."""
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_})


def count_flops(model: nn.Module, step: Callable[[nn.Module], torch.Tensor], device: str) -> int:
    """FLOPs of one forward + backward (2 per multiply-add) under bf16 autocast, eager."""
    model.zero_grad(set_to_none=True)
    counter = flop_counter()
    with counter:  # one context: re-entering it would reset the counts
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            loss = step(model)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


# torch.compile's modes (``--compile-mode``); the ones that replay CUDA graphs need a step marker.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _mode_label(compiled: bool | str) -> str:
    """A row's mode: eager, compile (torch's default mode) or compile:MODE."""
    return f"compile:{compiled}" if isinstance(compiled, str) else "compile" if compiled else "eager"


CUDNN_BENCHMARK_HELP = (
    "both sides: cuDNN times its convolution algorithms per shape at the first calls (the warm-up), as the "
    "training recipes have it (torch's default: off)"
)


@contextlib.contextmanager
def backend_settings(cudnn_benchmark: bool = False) -> Any:
    """The benchmarks' backend settings, restored on exit (the library never sets them; the training recipes
    set the last): TF32 for float32 matmuls and convolutions, and cuDNN's algorithm search when asked."""
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")
    saved = [getattr(o, a) for o, a in flags], torch.backends.cudnn.benchmark
    try:
        for o, a in flags:
            setattr(o, a, True)
        torch.backends.cudnn.benchmark = cudnn_benchmark or saved[1]
        yield
    finally:
        for (o, a), v in zip(flags, saved[0]):
            setattr(o, a, v)
        torch.backends.cudnn.benchmark = saved[1]


def compiled_copy(model: nn.Module, mode: str | None = None) -> nn.Module:
    """``model`` compiled the way its own library compiles it, ``Module.compile`` (multidiff's
    ``UNet.compile`` adds Inductor options; diffusers' models keep ``torch.compile``'s), in a ``mode``
    of ``torch.compile`` (None: the default). Compiled in place on a shallow copy: the same parameters,
    and ``model`` itself stays eager."""
    run = copy.copy(model)
    run.compile(mode=mode)
    return run


def regional_copy(model: nn.Module, mode: str | None = None) -> nn.Module:
    """``model`` with each block of its down, mid and up stacks compiled on its own (:func:`compiled_copy` of
    each) and the rest eager: diffusers' "regional compilation", which compiles a U-Net's repeated blocks in a
    fraction of the time its whole graph takes. A shallow copy with its own table of children, so that
    ``model`` and its blocks stay eager; the parameters are shared."""
    run = copy.copy(model)
    run._modules = dict(model._modules)  # replacing a child of run leaves model's children as they are
    for name in ("down_blocks", "up_blocks"):
        if isinstance(model._modules.get(name), nn.ModuleList):
            run._modules[name] = nn.ModuleList([compiled_copy(b, mode) for b in model._modules[name]])
    if model._modules.get("mid_block") is not None:
        run._modules["mid_block"] = compiled_copy(model._modules["mid_block"], mode)
    return run


def make_train_step(
    model: nn.Module,
    step: Callable[[nn.Module], torch.Tensor],
    device: str,
    *,
    compile: bool | str,
    regional: bool = False,
) -> Callable[[], torch.Tensor]:
    """One training step (what :func:`time_training` times and ``profile_steps.py`` profiles): zero grads, forward under bf16 autocast,
    backward, AdamW (fused on CUDA). ``compile``: False (eager), True (``torch.compile``'s default mode)
    or a ``torch.compile`` mode; ``"reduce-overhead"`` replays the forward and backward graphs as CUDA
    graphs, which is what a launch-bound step (the video U-Net's, RESULTS.md) needs. ``regional``: compiled
    block by block (:func:`regional_copy`) instead of whole."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.startswith("cuda"))
    mode = compile if isinstance(compile, str) else None
    run_model = (regional_copy if regional else compiled_copy)(model, mode) if compile else model
    graphs = mode in ("reduce-overhead", "max-autotune")
    dev_type = device.split(":")[0]

    def train_step() -> torch.Tensor:
        if graphs:  # a new iteration: the graphs' previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev_type, dtype=torch.bfloat16):
            loss = step(run_model)
        loss.backward()
        opt.step()
        return loss

    return train_step


def time_training(
    model: nn.Module,
    step: Callable[[nn.Module], torch.Tensor],
    device: str,
    *,
    compile: bool | str,
    steps: int,
    warmup: int,
    regional: bool = False,
) -> dict[str, float]:
    """Median seconds per training step, peak memory over the timed steps and the first step's time
    (compilation, the fused kernels' autotuning). The peak is taken after the warm-up, so what happens once
    (autotuning's timing buffers, compilation) is not counted as the memory a step needs."""
    fused = device.startswith("cuda")
    train_step = make_train_step(model, step, device, compile=compile, regional=regional)
    gc.collect()
    if fused:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    loss = train_step()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        loss = train_step()
    _sync(device)
    if fused:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        if fused:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = train_step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            loss = train_step()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if fused else 0
    if not torch.isfinite(loss.detach()).item():
        raise RuntimeError("training loss is not finite")
    model.zero_grad(set_to_none=True)
    return {"step_s": statistics.median(times), "peak_bytes": float(peak), "first_step_s": first}


def run_case(
    case: Case,
    device: str,
    *,
    tiny: bool,
    compile_modes: list[bool | str],
    steps: int,
    warmup: int,
    variants: bool | list[str] = False,
    sides: list[str] | None = None,
    on_row: Callable[[dict], None] | None = None,
    ref_regional: bool = False,
) -> list[dict]:
    """Run one case: both models (and, with ``variants``, the case's alternative multidiff models,
    key ``variants``: name -> module, or a callable building it, run by ``step_ours``), each mode;
    diffusers' model last (compiled block by block with ``ref_regional``); ``sides`` keeps only those
    named (``ours``, ``ref``, ``ours:VARIANT``).
    Idle models wait on the CPU; ``on_row`` gets every row as soon as it is measured."""
    kwargs = {"tiny": True} if tiny and "tiny" in inspect.signature(case).parameters else {}
    spec = case(device, **kwargs)
    rows = []
    models = {"ours": spec["ours"]}
    steps_fn = {"ours": spec["step_ours"]}
    if variants:
        for vname, vmodel in spec.get("variants", {}).items():
            if isinstance(variants, list) and variants and vname not in variants:
                continue
            if sides and f"ours:{vname}" not in sides:
                continue
            models[f"ours:{vname}"] = vmodel if isinstance(vmodel, nn.Module) else vmodel()
            steps_fn[f"ours:{vname}"] = spec["step_ours"]
    models["ref"], steps_fn["ref"] = spec["ref"], spec["step_ref"]
    if sides:
        models = {k: v for k, v in models.items() if k in sides}
    flops = {}
    for side in models:
        for m in models.values():
            m.to("cpu")
        model = models[side].to(device).train()
        flops[side] = count_flops(model, steps_fn[side], device)
        params = sum(p.numel() for p in model.parameters())
        for compiled in compile_modes:
            torch._dynamo.reset()
            regional = ref_regional and side == "ref" and bool(compiled)
            r = time_training(
                model, steps_fn[side], device, compile=compiled, steps=steps, warmup=warmup, regional=regional
            )
            rows.append(
                dict(
                    case=spec["name"],
                    side=side,
                    model=type(model).__name__,
                    params=params,
                    mode=_mode_label(compiled) + (" regional" if regional else ""),
                    batch=spec["batch"],
                    step_ms=1000 * r["step_s"],
                    samples_per_s=spec["batch"] / r["step_s"],
                    tflops=flops[side] / r["step_s"] / 1e12,
                    gflop_per_step=flops[side] / 1e9,
                    peak_gib=r["peak_bytes"] / 2**30,
                    first_step_s=r["first_step_s"],
                )
            )
            print(
                f"  {spec['name']:<16} {side:<10} {rows[-1]['mode']:<7} {rows[-1]['samples_per_s']:9.1f}/s "
                f"{rows[-1]['tflops']:7.1f} TFLOP/s  peak {rows[-1]['peak_gib']:6.2f} GiB  "
                f"first step {r['first_step_s']:.1f}s",
                flush=True,
            )
            if on_row is not None:
                on_row(rows[-1])
        models[side].to("cpu")
    del spec, models, steps_fn
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table with the ours/diffusers speed and memory ratios per case and mode (a multidiff row
    without its diffusers row, e.g. under ``--sides ours``, gets dashes there; diffusers compiled block by
    block, ``--ref-regional``, stands against ours compiled in the same mode and is marked so)."""
    lines = [
        "| case | mode | batch | multidiff samples/s | diffusers samples/s | speed ratio | "
        "multidiff TFLOP/s | diffusers TFLOP/s | multidiff peak GiB | diffusers peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    refs = {(r["case"], r["mode"].removesuffix(" regional")): r for r in rows if r["side"] == "ref"}
    for o in rows:
        if o["side"] == "ref":
            continue
        d = refs.get((o["case"], o["mode"]))
        label = o["case"] if o["side"] == "ours" else f"{o['case']} [{o['side'][5:]}]"
        theirs = (
            (f"{d['samples_per_s']:.1f}" + (" (regional)" if d["mode"].endswith(" regional") else ""),
             f"{o['samples_per_s'] / d['samples_per_s']:.2f}x", f"{d['tflops']:.0f}", f"{d['peak_gib']:.2f}")
            if d is not None
            else ("-",) * 4
        )  # fmt: skip
        lines.append(
            f"| {label} | {o['mode']} | {o['batch']} | {o['samples_per_s']:.1f} | {theirs[0]} | {theirs[1]} | "
            f"{o['tflops']:.0f} | {theirs[2]} | {o['peak_gib']:.2f} | {theirs[3]} |"
        )
    return "\n".join(lines)


def write_results(out: Path, env: dict[str, str], rows: list[dict]) -> None:
    """Write ``results.json`` (every row) and ``results.md`` (the table) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    (out / "results.md").write_text(f"{json.dumps(env)}\n\n{table(rows)}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only", nargs="+", help="cases to run, by name (DiT-B/2, VideoDiT-B/2) or function name"
    )
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--compile-only", action="store_true", help="torch.compile only")
    ap.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        help="torch.compile mode of the compiled rows, both sides (default: torch's default)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="shrink every case (CPU smoke test)")
    ap.add_argument(
        "--variants",
        nargs="*",
        help="also time the cases' alternative multidiff models: those named (plain_ops, sdpa_cudnn, "
        "sdpa_flash, fp8_tensorwise, fp8_rowwise, fp32_residual, channels_last, channels_last_plain, "
        "by_channel_group_norm), or all without names",
    )
    ap.add_argument(
        "--sides", nargs="+", metavar="SIDE", help="run only these: ours, ref, ours:VARIANT (default: all)"
    )
    ap.add_argument("--cudnn-benchmark", action="store_true", help=CUDNN_BENCHMARK_HELP)
    ap.add_argument(
        "--ref-regional",
        action="store_true",
        help="compile diffusers' side block by block (its down, mid and up blocks each on their own, as "
        "diffusers' regional compilation does): minutes less to compile a large U-Net",
    )
    ap.add_argument("--out", type=Path, help="write results.json and results.md here")
    args = ap.parse_args(argv)
    with backend_settings(args.cudnn_benchmark):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """Every case asked for, each row written as it is measured, then the table printed."""

    compiled: bool | str = args.compile_mode or True
    modes = [False] if args.no_compile else [compiled] if args.compile_only else [False, compiled]
    cases = [c for c in all_cases() if not args.only or set(args.only) & {c.__name__, case_name(c)}]
    env = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "python": platform.python_version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        env["diffusers"] = "missing"
    print(json.dumps(env), flush=True)
    rows: list[dict] = []

    def keep(row: dict) -> None:  # written after every row, so a run cut short keeps what it measured
        rows.append(row)
        if args.out is not None:
            write_results(args.out, env, rows)

    for case in cases:
        print(f"case {case_name(case)}", flush=True)
        run_case(
            case,
            args.device,
            tiny=args.tiny,
            compile_modes=modes,
            steps=args.steps,
            warmup=args.warmup,
            variants=False if args.variants is None else args.variants or True,
            sides=args.sides,
            on_row=keep,
            ref_regional=args.ref_regional,
        )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
