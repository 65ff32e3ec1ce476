"""What the end-to-end benchmarks (``audio_speech.py``, ``video_digits.py``) measure the same way."""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multidiff.train import read_log


def timed_generate(pipe: Any, device: torch.device, **kw: Any) -> tuple[Tensor, float]:
    """``pipe.generate(**kw)`` without a progress bar, and the seconds it took (the device synchronised
    before and after, so the time covers the whole generation)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = pipe.generate(progress=False, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def steady_throughput(run: Path) -> float | None:
    """Median ``samples_per_s`` of a run's log after its first tenth, never counting the first record
    (start-up, first batches, compilation); None when the log has no throughput record."""
    log = [r for r in read_log(run) if "samples_per_s" in r]
    tail = log[max(len(log) // 10, 1 if len(log) > 1 else 0) :]
    return statistics.median(r["samples_per_s"] for r in tail) if tail else None


def start_result(
    args: argparse.Namespace, argv: list[str] | None, script: str
) -> tuple[Path, torch.device, dict]:
    """``(OUT/run, device, result header)`` of a benchmark that trains in ``OUT/run``: refuses an existing run
    folder (training would resume there), makes OUT, and records command, date, torch, card and settings."""
    out = Path(args.out)
    run = out / "run"
    if run.exists():
        raise SystemExit(f"error: {run} exists (a training run would resume there); use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    result = {
        "command": shlex.join(["python", *sys.argv] if argv is None else ["python", script, *argv]),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    return run, device, result
