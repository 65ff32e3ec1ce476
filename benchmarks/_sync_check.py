"""Count the host-device synchronisations of ``Pipeline.sample`` per sampler (a check for a CUDA machine).

Under ``torch.cuda.set_sync_debug_mode("warn")`` every operation that blocks the host on the GPU warns.
Each sampler runs the whole pipeline path (labels, classifier-free guidance, x0 clamping) with 4 and with
8 steps; a count that grows with the number of steps is a synchronisation inside the loop.

    python benchmarks/_sync_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multidiff.core.denoiser import Denoiser  # noqa: E402
from multidiff.core.schedules import EDMSchedule, VPSchedule  # noqa: E402
from multidiff.nn.unet import UNet, UNetConfig  # noqa: E402
from multidiff.pipeline import Pipeline, SamplingConfig  # noqa: E402

NAMES = ["euler", "euler_ancestral", "ddim", "ddpm", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m",
         "dpmpp_3m_sde", "unipc", "unipc_3"]  # fmt: skip


def count_syncs(pipe: Pipeline, sampler: str, steps: int, device: torch.device) -> int:
    lo, hi = torch.full((1, 1, 1), -1.0), torch.full((1, 1, 1), 1.0)
    pipe.x0_range = (lo, hi)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            pipe.sample(4, (1, 16, 16), steps=steps, sampler=sampler, guidance=2.0, label=[0, 1, 0, 1], seed=0,
                        progress=False)  # fmt: skip
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize(device)
    return sum("synchroniz" in str(w.message) for w in caught)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cfg = UNetConfig(in_channels=1, channels=(16, 32), num_res_blocks=1, attention_levels=(), head_dim=16,
                     norm_groups=8, num_classes=2, emb_dim=64, noise_freq_dim=32)  # fmt: skip
    rows = []
    for sched_name, schedule, prediction in (("edm", EDMSchedule(), "edm"), ("vp", VPSchedule(), "eps")):
        den = Denoiser(UNet(cfg), prediction=prediction, schedule=schedule, sigma_data=0.5).to(dev)
        pipe = Pipeline(den, sampling=SamplingConfig(), labels=["a", "b"])
        for name in NAMES:
            pipe.sample(1, (1, 16, 16), steps=2, sampler=name, progress=False)  # warm-up (cuDNN, allocator)
            n4, n8 = (count_syncs(pipe, name, s, dev) for s in (4, 8))
            rows.append((sched_name, name, n4, n8))
            print(f"{sched_name:4s} {name:16s} syncs at 4 steps: {n4:3d}   at 8 steps: {n8:3d}", flush=True)
    growing = [(s, n) for s, n, a, b in rows if b > a]
    print("samplers whose syncs grow with the step count:", growing or "none", flush=True)


if __name__ == "__main__":
    main()
