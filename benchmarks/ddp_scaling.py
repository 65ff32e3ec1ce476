"""Data-parallel scaling of the train recipes (DDP) and a model that needs FSDP2 (``--shard``).

Cases (each at every process count of ``--gpus``, the same batch per GPU, launched with torchrun):

* ``video-dit-b2``: ``recipes/train_video.py --preset base --backbone dit`` (DiT-B/2, factorised space-time
  attention) on 16-frame clips of 64 x 64 pixels: 16 x 32 x 32 tokens a clip, as 256 px frames through an
  8x VAE would give (pixel space spares the benchmark a VAE).
* ``mel-unet``: ``recipes/train_audio.py --preset base`` (the 75M mel U-Net) on 3 s clips at 22.05 kHz.
* ``fsdp-dit``: a factorised video DiT of ~6.8B parameters (width 3072, 40 blocks, 24 heads, 2x2 patches) on
  the same 16 x 32 x 32 tokens, trained with the library's own pieces (``start_training`` with
  ``shard=True`` and activation checkpointing, ``optimizer_step``, AdamW, float32 EMA, bf16 compute) on
  random batches. At 1 GPU it runs unsharded: its float32 weights, gradients, AdamW moments and EMA alone
  (20 bytes a parameter, ~136 GB) plus activations do not fit one 141 GB H200, and the row says OOM; at 2
  GPUs the same model is sharded. The recipes train it the same way (``--shard --activation-checkpointing``);
  the benchmark skips the recipe only to spare the disk a 100 GB checkpoint.

Each row: samples/s over the global batch (median of the logged intervals after the warm-up, so
``torch.compile`` and cuDNN autotuning are excluded), scaling efficiency (samples/s at N GPUs over N times
samples/s at one), and the peak memory allocated on the busiest rank. Results: ``OUT/<case>-<N>.json``
per run and ``OUT/ddp_scaling.md`` (the table, rebuilt from every JSON in OUT, so cases can be run by
separate commands).

    python benchmarks/ddp_scaling.py --out benchmarks/results/ddp_scaling            # all cases, 1 and 2 GPUs
    python benchmarks/ddp_scaling.py --out DIR --cases video-dit-b2 --gpus 2          # one row
    python benchmarks/ddp_scaling.py --dry-run --out /tmp/scaling                    # CPU smoke test: gloo,
                                                                                     # tiny models, 1 and 2 procs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = ("video-dit-b2", "mel-unet", "fsdp-dit")

# Per-GPU batch, steps, log interval and warm-up (logged intervals before this step are not timed).
FULL = {
    "video-dit-b2": {"batch": 8, "steps": 60, "log_every": 5, "warmup": 20},
    "mel-unet": {"batch": 32, "steps": 60, "log_every": 5, "warmup": 20},
    "fsdp-dit": {"batch": 4, "steps": 8, "log_every": 1, "warmup": 3},
}
TINY = {
    "video-dit-b2": {"batch": 2, "steps": 6, "log_every": 1, "warmup": 2},
    "mel-unet": {"batch": 2, "steps": 6, "log_every": 1, "warmup": 2},
    "fsdp-dit": {"batch": 2, "steps": 4, "log_every": 1, "warmup": 1},
}
# The FSDP2 model: (width, depth, heads); 18 D^2 parameters a block (attention 4, MLP 8, adaLN 6).
FSDP_DIT = {"full": (3072, 40, 24), "tiny": (32, 2, 2)}


# --------------------------------------------------------------------------------------------------
# Data (written once per output folder)
# --------------------------------------------------------------------------------------------------


def make_videos(root: Path, n: int, frames: int, size: int) -> Path:
    """``n`` clips of a coloured square moving over a gradient (mp4)."""
    from multidiff.io import write_video

    if root.is_dir() and len(list(root.glob("*.mp4"))) == n:
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    s = max(3, size // 4)
    for k in range(n):
        v = np.zeros((frames, size, size, 3), np.uint8)
        v[..., 2] = np.linspace(0, 120, size, dtype=np.uint8)[None, None, :]
        x, y = (int(t) for t in rng.integers(0, size - s, 2))
        dx, dy = (int(t) for t in rng.choice([-2, 2], 2))
        color = rng.integers(100, 256, 3).astype(np.uint8)
        for f in range(frames):
            v[f, y : y + s, x : x + s] = color
            dx = -dx if not 0 <= x + dx <= size - s else dx
            dy = -dy if not 0 <= y + dy <= size - s else dy
            x, y = x + dx, y + dy
        write_video(root / f"clip{k:03d}.mp4", v, fps=8)
    return root


def make_audio(root: Path, n: int, seconds: float, sample_rate: int) -> Path:
    """``n`` clips of a few harmonics with a decaying envelope and a little noise (wav)."""
    from multidiff.io import write_audio

    if root.is_dir() and len(list(root.glob("*.wav"))) == n:
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for k in range(n):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * np.exp(-t / seconds)
        wave = 0.3 * wave + 0.01 * rng.standard_normal(t.shape)
        write_audio(root / f"clip{k:03d}.wav", wave.astype(np.float32), sample_rate)
    return root


# --------------------------------------------------------------------------------------------------
# Workers (one per rank, under torchrun)
# --------------------------------------------------------------------------------------------------


def _peak_memory(device: torch.device) -> float:
    """Peak memory of this rank in GiB: CUDA memory allocated, or the process's peak resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def _rank_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.rank{os.environ.get('RANK', '0')}")


def recipe_worker(recipe: str, json_path: Path, argv: list[str]) -> None:
    """Run a train recipe in this process (torchrun started it), then write this rank's peak memory."""
    from multidiff.cli import load_recipe

    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if torch.cuda.is_available() and "--device" not in argv
        else torch.device("cpu")
    )
    start = time.perf_counter()
    load_recipe(recipe).main(argv)
    _rank_file(json_path).write_text(
        json.dumps({"peak_gib": _peak_memory(device), "wall_s": time.perf_counter() - start})
    )


def fsdp_worker(json_path: Path, *, width: int, depth: int, heads: int, frames: int, size: int,
                per_gpu: int, steps: int, warmup: int, shard: bool, device: str | None) -> None:  # fmt: skip
    """Train the big DiT on random batches with the library's pieces; write this rank's numbers."""
    from multidiff import train
    from multidiff.core.denoiser import Denoiser
    from multidiff.core.losses import LogNormal
    from multidiff.nn.dit import DiT, DiTConfig

    dist = train.setup_distributed(device)
    dev = dist.device
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = DiTConfig(
        in_channels=3, cond_channels=4, patch=(1, 2, 2), width=width, depth=depth, heads=heads,
        attention="factorised",
    )  # fmt: skip
    settings = train.TrainSettings(
        steps=steps, batch=per_gpu * dist.world_size, lr=1e-4, warmup=0, ema_decay=0.9999,
        precision="bf16", shard=shard, activation_checkpointing=True,
    )  # fmt: skip
    out: dict[str, Any] = {"params": None, "shard": shard, "world_size": dist.world_size}
    try:
        torch.manual_seed(0)
        with dev:  # initialise on the device: a 6B model is slow to initialise on the CPU
            net = Denoiser(DiT(cfg), "edm")
        out["params"] = sum(p.numel() for p in net.parameters())
        training = train.start_training(net, settings, None, dist)
        g = torch.Generator().manual_seed(dist.rank)
        x0 = (torch.rand(per_gpu, 3, frames, size, size, generator=g) * 2 - 1).to(dev)
        batch = {"x0": x0, "cond": {"cond_channels": torch.zeros(per_gpu, 4, frames, size, size, device=dev)},
                 "seeds": torch.arange(per_gpu) + dist.rank * per_gpu}  # fmt: skip

        def loss_fn(m: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
            return train.diffusion_loss(m, b["x0"], LogNormal(0.5, 1.2), seeds=b["seeds"], cond=b["cond"])

        times = []
        for step in range(steps):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            train.optimizer_step(training.model, training.optimizer, [batch], loss_fn, step=step, device=dev,
                                 precision="bf16", ema=training.ema, guard=training.guard)  # fmt: skip
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
        step_s = statistics.median(times[warmup:])
        out.update(status="ok", step_s=step_s, samples_per_s=per_gpu * dist.world_size / step_s)
    except torch.cuda.OutOfMemoryError as err:
        out.update(status="OOM", error=str(err).splitlines()[0][:300])
    out["peak_gib"] = _peak_memory(dev)
    _rank_file(json_path).write_text(json.dumps(out))
    train.cleanup_distributed()


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def _launch(nproc: int, worker_args: list[str], log: Path, timeout: float) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           str(Path(__file__).resolve()), *worker_args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "w", encoding="utf-8") as f:
        try:
            return subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return 124


def run_case(case: str, nproc: int, out: Path, *, tiny: bool, compile_flag: str | None) -> dict[str, Any]:
    """Launch one case at ``nproc`` processes; returns (and writes) its row."""
    from multidiff.train.monitor import read_log

    plan = (TINY if tiny else FULL)[case]
    per_gpu, steps = plan["batch"], plan["steps"]
    name = f"{case}-{nproc}"
    json_path = out / f"{name}.json"
    for stale in out.glob(f"{name}.json.rank*"):
        stale.unlink()
    run = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out))
    device = ["--device", "cpu"] if tiny else []
    row: dict[str, Any] = {
        "case": case,
        "gpus": nproc,
        "per_gpu_batch": per_gpu,
        "global_batch": per_gpu * nproc,
    }
    if case == "fsdp-dit":
        width, depth, heads = FSDP_DIT["tiny" if tiny else "full"]
        frames, size = (4, 8) if tiny else (16, 64)
        worker = ["--worker", "fsdp", "--json", str(json_path), "--width", str(width), "--depth", str(depth),
                  "--heads", str(heads), "--frames", str(frames), "--size", str(size), "--per-gpu", str(per_gpu),
                  "--steps", str(steps), "--warmup", str(plan["warmup"]), *device]  # fmt: skip
        if nproc > 1:
            worker.append("--shard")
        row.update(model=f"DiT {width}x{depth} ({heads} heads)", frames=frames, size=size)
    else:
        common = ["--out", str(run), "--steps", str(steps), "--batch", str(per_gpu * nproc), "--ckpt-every",
                  str(steps), "--preview-every", "0", "--log-every", str(plan["log_every"]), "--warmup", "0",
                  *device]  # fmt: skip
        if compile_flag:
            common.append(compile_flag)
        if case == "video-dit-b2":
            frames, size = (4, 16) if tiny else (16, 64)
            data = make_videos(out / "data-video" / f"{size}px", 16 if tiny else 64, frames + 4, size)
            recipe = "train_video.py"
            argv = ["--data", str(data), "--preset", "tiny" if tiny else "base", "--backbone", "dit",
                    "--frames", str(frames), "--size", str(size), *common]  # fmt: skip
            row.update(model="tiny DiT" if tiny else "DiT-B/2 (factorised)", frames=frames, size=size)
        else:
            seconds, sr = (1.0, 16000) if tiny else (3.0, 22050)
            data = make_audio(out / "data-audio" / f"{sr}", 16 if tiny else 64, seconds + 0.5, sr)
            recipe = "train_audio.py"
            argv = ["--data", str(data), "--preset", "tiny" if tiny else "base", "--seconds", str(seconds),
                    *common]  # fmt: skip
            row.update(model="tiny mel U-Net" if tiny else "mel U-Net 75M (base)", seconds=seconds)
        worker = ["--worker", "recipe", "--recipe", recipe, "--json", str(json_path), "--", *argv]
    log = out / f"{name}.log"
    t0 = time.perf_counter()
    rc = _launch(nproc, worker, log, timeout=3600)
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob(f"{name}.json.rank*"))]
    row["peak_gib"] = max((r["peak_gib"] for r in ranks), default=None)
    if case == "fsdp-dit":
        first = ranks[0] if ranks else {}
        row.update(params=first.get("params"), sharded=nproc > 1)
        row["status"] = first.get("status", f"failed (exit {rc}, see {log.name})")
        if row["status"] == "ok":
            row.update(samples_per_s=first["samples_per_s"], step_s=first["step_s"])
        elif "error" in first:
            row["error"] = first["error"]
    else:
        records = [r for r in read_log(run) if "samples_per_s" in r and r["step"] > plan["warmup"]]
        rates = [r["samples_per_s"] for r in records]
        row["status"] = "ok" if rc == 0 and rates else f"failed (exit {rc}, see {log.name})"
        if rates:
            row["samples_per_s"] = statistics.median(rates)
    for p in out.glob(f"{name}.json.rank*"):
        p.unlink()
    if row["status"] == "ok":
        import shutil

        shutil.rmtree(run, ignore_errors=True)  # checkpoints of a benchmark are not kept
    json_path.write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps(row), flush=True)
    return row


def write_table(out: Path, meta: dict[str, Any]) -> str:
    """``OUT/ddp_scaling.md`` from every ``OUT/<case>-<N>.json``, with scaling efficiency against 1 GPU."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-[0-9]*.json"))]
    one = {r["case"]: r.get("samples_per_s") for r in rows if r["gpus"] == 1 and r["status"] == "ok"}
    lines = [
        f"torch {meta['torch']}, {meta['device']}",
        "",
        "| case | model | GPUs | batch per GPU | samples/s | scaling efficiency | peak memory (GiB) | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (CASES.index(r["case"]), r["gpus"])):
        rate = r.get("samples_per_s")
        base = one.get(r["case"])
        eff = f"{rate / (r['gpus'] * base):.2f}" if rate and base else "-"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        n = r.get("params")
        model = r["model"] + (
            "" if not n else f", {n / 1e9:.2f}B params" if n >= 1e8 else f", {n / 1e6:.2f}M params"
        )
        model += ", FSDP2" if r.get("sharded") else ""
        lines.append(
            f"| {r['case']} | {model} | {r['gpus']} | {r['per_gpu_batch']} | "
            f"{f'{rate:.2f}' if rate else '-'} | {eff} | {peak} | {r['status']} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "ddp_scaling.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/ddp_scaling", help="results folder")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--gpus", default="1,2", help="process counts (comma-separated)")
    ap.add_argument("--dry-run", action="store_true", help="CPU smoke test: gloo, tiny models, few steps")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile in the recipe cases (default: the recipes' own, on with CUDA)")  # fmt: skip
    # worker mode (torchrun runs this file again on every rank)
    ap.add_argument("--worker", choices=("recipe", "fsdp"), help=argparse.SUPPRESS)
    ap.add_argument("--recipe", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    for name in ("width", "depth", "heads", "frames", "size", "per-gpu", "steps", "warmup"):
        ap.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker == "recipe":
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        recipe_worker(args.recipe, Path(args.json), rest)
        return
    if args.worker == "fsdp":
        fsdp_worker(Path(args.json), width=args.width, depth=args.depth, heads=args.heads, frames=args.frames,
                    size=args.size, per_gpu=args.per_gpu, steps=args.steps, warmup=args.warmup, shard=args.shard,
                    device=args.device)  # fmt: skip
        return

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"--cases: unknown {bad}; choose from {', '.join(CASES)}")
    gpus = [int(g) for g in args.gpus.split(",")]
    if not args.dry_run and torch.cuda.device_count() < max(gpus):
        ap.error(f"--gpus {args.gpus} needs {max(gpus)} CUDA devices, found {torch.cuda.device_count()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    compile_flag = None if args.compile is None else ("--compile" if args.compile else "--no-compile")
    for case in cases:
        for n in gpus:
            run_case(case, n, out, tiny=args.dry_run, compile_flag=compile_flag)
    meta = {
        "torch": torch.__version__,
        "device": "CPU (gloo), --dry-run"
        if args.dry_run
        else f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}",  # fmt: skip
        "host": platform.node(),
    }
    print(write_table(out, meta))


if __name__ == "__main__":
    main()
