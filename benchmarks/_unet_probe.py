"""Probe variants of the multidiff U-Net presets (training throughput), within a wall-clock budget.

Uses the timing of ``train_throughput.py``. Each variant is a case of ``unet_cases.py`` with config
overrides; only our model is timed. Variants start in order until ``--budget-s`` has passed.

    python benchmarks/_unet_probe.py --budget-s 200 --variants mel:num_res_blocks=1,2,2,2 video:
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import count_flops, time_training  # noqa: E402
from unet_cases import case_mel_unet, case_video_unet  # noqa: E402

CASES = {"mel": case_mel_unet, "video": case_video_unet}


def parse(spec: str) -> tuple[str, dict[str, object], bool]:
    """``case:key=value;key=value[:eager]`` -> (case, overrides, compiled)."""
    parts = spec.split(":")
    overrides: dict[str, object] = {}
    if len(parts) > 1 and parts[1]:
        for item in parts[1].split(";"):
            key, value = item.split("=", 1)
            try:
                overrides[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                overrides[key] = value
    return parts[0], overrides, not (len(parts) > 2 and parts[2] == "eager")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--budget-s", type=float, default=300.0, help="start no variant after this many seconds")
    ap.add_argument("--deadline", type=float, default=float("inf"), help="or after this Unix time")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke test)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    start = time.perf_counter()
    rows = []
    for spec in args.variants:
        if time.perf_counter() - start > args.budget_s or time.time() > args.deadline:
            print(f"skip {spec}: budget spent", flush=True)
            continue
        name, overrides, compiled = parse(spec)
        case = CASES[name](args.device, tiny=args.tiny, overrides=overrides)
        del case["ref"]
        model = case["ours"].to(args.device).train()
        flops = count_flops(model, case["step_ours"], args.device)
        torch._dynamo.reset()
        r = time_training(
            model, case["step_ours"], args.device, compile=compiled, steps=args.steps, warmup=args.warmup
        )
        row = dict(
            variant=spec,
            params_m=sum(p.numel() for p in model.parameters()) / 1e6,
            samples_per_s=case["batch"] / r["step_s"],
            tflops=flops / r["step_s"] / 1e12,
            gflop_per_step=flops / 1e9,
            peak_gib=r["peak_bytes"] / 2**30,
            first_step_s=r["first_step_s"],
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
        del case, model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "probe.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
