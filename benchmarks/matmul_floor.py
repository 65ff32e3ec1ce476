"""How fast one-clip generation could be if only its matmuls, convolutions and attention ran (issue 13).

Issue 13's bar asks one-clip generation (DiT-XL/2 DDIM-50 with guidance, one spoken digit, one moving
digit) to run 3x faster than diffusers' compiled loop. Fusing and graphing remove the work *around* the
matmuls; they cannot make the matmuls themselves faster. This benchmark measures that floor per case:

1. the backbone's forward at the sampler's batch (guidance doubles it: 2) runs once under a dispatch mode
   that records every matmul, convolution and attention op it calls, with the shapes, strides and dtypes
   of its tensor arguments (under bf16 autocast, the weights in bf16, as ``generate --dtype bf16`` runs);
2. those ops alone, on fresh tensors of the same layouts, are captured in one CUDA graph (no launch
   overhead, no work between them) and replayed once per sampler step;
3. beside it, the whole forward captured the same way (eager kernels, and with ``--compile`` the backbone
   compiled by its own ``Module.compile``), so the share of the step the floor takes is visible.

The loop's floor is ``steps`` replays of the ops alone. If it is above a target (``--target CASE=SECONDS``,
e.g. diffusers' compiled loop over 3 from ``generation_latency.py``), no change outside the matmul,
convolution and attention kernels can meet that target on this card. The decode (VAE, vocoder) and the
sampler's arithmetic are left out, so the floor is a lower bound.

    python benchmarks/matmul_floor.py --out OUT --compile --target DiT-XL/2-b1=0.0634   # on the device
    python benchmarks/matmul_floor.py --tiny --device cpu                               # CPU smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generation_latency import TINY_DIT, Options, _bundled  # noqa: E402
from train_throughput import CUDNN_BENCHMARK_HELP, _sync, backend_settings, compiled_copy  # noqa: E402

from multidiff.nn.dit import DIT_PRESETS, DiT  # noqa: E402

aten = torch.ops.aten
#: The ops the floor keeps, by kind: what cuBLAS, cuDNN and the attention kernels run.
KINDS: dict[Any, str] = {
    aten.mm.default: "matmul",
    aten.addmm.default: "matmul",
    aten.bmm.default: "matmul",
    aten.baddbmm.default: "matmul",
    aten._addmm_activation.default: "matmul",
    aten.convolution.default: "convolution",
    aten._scaled_dot_product_flash_attention.default: "attention",
    aten._scaled_dot_product_efficient_attention.default: "attention",
    aten._scaled_dot_product_cudnn_attention.default: "attention",
    aten._scaled_dot_product_flash_attention_for_cpu.default: "attention",
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A tensor argument as recorded: what a fresh tensor needs to stand in for it."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


@dataclasses.dataclass
class Op:
    """One recorded call: the op, and its arguments with tensors replaced by their layouts."""

    op: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def kind(self) -> str:
        return KINDS[self.op]


def _layout(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return Layout(tuple(value.shape), tuple(value.stride()), value.dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_layout(v) for v in value)
    return value


class Recorder(TorchDispatchMode):
    """Records the calls of the ops in :data:`KINDS` (and lets every op run as usual)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in KINDS:
            self.ops.append(Op(func, _layout(args), _layout(kwargs)))
        return func(*args, **kwargs)


def record(forward: Callable[[], Any]) -> list[Op]:
    """The matmul, convolution and attention calls of one ``forward()``."""
    recorder = Recorder()
    with torch.no_grad(), recorder:
        forward()
    return recorder.ops


def materialise(ops: list[Op], device: torch.device, seed: int = 0) -> Callable[[], None]:
    """``replay()``: every op of ``ops`` in order on fresh tensors of the recorded layouts (made once, filled
    with unit normal values so that no op meets NaNs or denormals)."""
    g = torch.Generator(device).manual_seed(seed)

    def make(value: Any) -> Any:
        if isinstance(value, Layout):
            size = 1 + sum((n - 1) * s for n, s in zip(value.shape, value.stride) if n > 0)
            base = torch.randn(size, generator=g, device=device).to(value.dtype)
            return base.as_strided(value.shape, value.stride)
        if isinstance(value, (list, tuple)):
            return type(value)(make(v) for v in value)
        return value

    calls = [(o.op, make(o.args), {k: make(v) for k, v in o.kwargs.items()}) for o in ops]

    def replay() -> None:
        for op, args, kwargs in calls:
            op(*args, **kwargs)

    return replay


def time_calls(fn: Callable[[], Any], device: torch.device, runs: int, warmup: int = 3) -> float:
    """Median seconds of one ``fn()`` (on CUDA replayed from one CUDA graph, so launches cost nothing)."""
    if device.type == "cuda":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        fn = graph.replay
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        _sync(str(device))
        t0 = time.perf_counter()
        fn()
        _sync(str(device))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------
# Cases: the backbone of each one-clip case of generation_latency.py, at the batch its sampler runs
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    net: nn.Module
    inputs: Callable[[torch.device], tuple[tuple[Any, ...], dict[str, Any]]]
    steps: int


def dit_case(tiny: bool) -> Case:
    cfg = DIT_PRESETS["DiT-XL/2"]
    size, steps = 32, 50
    if tiny:
        cfg, size, steps = dataclasses.replace(cfg, **TINY_DIT), 8, 2

    def inputs(dev: torch.device):
        x = torch.randn(2, cfg.in_channels, size, size, device=dev)
        return (x, torch.rand(2, device=dev)), {"labels": torch.tensor([0, cfg.num_classes], device=dev)}

    return Case("DiT-XL/2-b1", DiT(cfg), inputs, steps)


def _bundled_case(name: str, tiny: bool) -> Case:
    pipe = _bundled(name, Options("cpu", tiny=tiny))  # with tiny, its backbone swapped for a small one
    net = pipe.backbone
    cfg = net.config
    extent = ((2, 8, 8) if tiny else (16, 32, 32)) if cfg.video else ((0.1,) if tiny else (1.0,))
    shape = pipe.adapter.latent_shape(*extent)

    def inputs(dev: torch.device):
        cond: dict[str, Any] = {"labels": torch.tensor([0, cfg.num_classes], device=dev)}
        if cfg.cond_channels:
            cond["cond_channels"] = torch.zeros(2, cfg.cond_channels, *shape[1:], device=dev)
        return (torch.randn(2, *shape, device=dev), torch.rand(2, device=dev)), cond

    return Case(name, net, inputs, 2 if tiny else 32)


CASES: dict[str, Callable[[bool], Case]] = {
    "DiT-XL/2-b1": dit_case,
    "spoken-digits": lambda tiny: _bundled_case("spoken-digits", tiny),
    "moving-digits": lambda tiny: _bundled_case("moving-digits", tiny),
}


def measure(case: Case, device: torch.device, runs: int, compile: bool) -> dict[str, Any]:
    """The floor of ``case``: its ops recorded, their time alone and the whole forward's, per step and
    per loop."""
    amp = torch.autocast(device.type, torch.bfloat16)
    net = case.net.to(device, torch.bfloat16).eval()
    args, kwargs = case.inputs(device)
    with amp:
        ops = record(lambda: net(*args, **kwargs))
    kinds = Counter(o.kind for o in ops)
    timed: dict[str, float] = {}
    with torch.no_grad(), amp:
        replay = materialise(ops, device)
        timed["ops_alone"] = time_calls(replay, device, runs)
        for kind in sorted(kinds):
            timed[f"{kind}_alone"] = time_calls(
                materialise([o for o in ops if o.kind == kind], device), device, runs
            )
        timed["forward"] = time_calls(lambda: net(*args, **kwargs), device, runs)
        if compile:
            run = compiled_copy(net)
            timed["forward_compiled"] = time_calls(lambda: run(*args, **kwargs), device, runs)
    loop = {k: v * case.steps for k, v in timed.items()}
    params = sum(p.numel() for p in net.parameters()) / 1e6
    return dict(case=case.name, steps=case.steps, batch=2, params_m=params, ops=dict(kinds),
                step_s=timed, loop_s=loop)  # fmt: skip


def table(rows: list[dict[str, Any]], targets: dict[str, float]) -> str:
    head = (
        "| case | steps | ops recorded | matmuls alone | convolutions alone | attention alone | all of them "
        "(the floor) | whole forward, eager kernels | compiled | target | floor over target |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        loop = r["loop_s"]
        ms = lambda k, loop=loop: f"{loop[k] * 1e3:.1f} ms" if k in loop else "n/a"  # noqa: E731
        target = targets.get(r["case"])
        over = f"{loop['ops_alone'] / target:.2f}" if target else "n/a"
        ops = ", ".join(f"{n} {k}" for k, n in sorted(r["ops"].items()))
        lines.append(
            f"| {r['case']} | {r['steps']} | {ops} | {ms('matmul_alone')} | {ms('convolution_alone')} | "
            f"{ms('attention_alone')} | **{ms('ops_alone')}** | {ms('forward')} | {ms('forward_compiled')} | "
            f"{'n/a' if target is None else f'{target * 1e3:.1f} ms'} | {over} |"
        )
    return "\n".join(lines) + "\n"


def _target(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    if name not in CASES or not seconds:
        raise argparse.ArgumentTypeError(f"--target wants CASE=SECONDS with CASE one of {sorted(CASES)}")
    return name, float(seconds)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=sorted(CASES), help="cases (default: all)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, default=20, help="timed calls per figure (median)")
    ap.add_argument("--compile", action="store_true", help="also the forward compiled (minutes)")
    ap.add_argument("--target", action="append", type=_target, default=[], help="CASE=SECONDS for the loop")
    ap.add_argument("--tiny", action="store_true", help="small models (CPU smoke test)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help=CUDNN_BENCHMARK_HELP)
    ap.add_argument("--out", type=Path, help="folder for matmul_floor.json and .md")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    device, targets = torch.device(args.device), dict(args.target)
    env = dict(date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               torch=torch.__version__, python=platform.python_version(), device=args.device,
               card=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
               command=" ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
               cudnn_benchmark=args.cudnn_benchmark)  # fmt: skip
    rows = []
    for name in args.only or list(CASES):
        with backend_settings(args.cudnn_benchmark):
            rows.append(measure(CASES[name](args.tiny), device, args.runs, args.compile))
        print(table(rows[-1:], targets), flush=True)
        if args.out is not None:  # after every case, so a run cut short keeps what it measured
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "matmul_floor.json").write_text(json.dumps(dict(env=env, rows=rows), indent=2) + "\n")
            (args.out / "matmul_floor.md").write_text(table(rows, targets))
    return rows


if __name__ == "__main__":
    main()
