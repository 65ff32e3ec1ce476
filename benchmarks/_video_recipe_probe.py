"""Where the time of one ``train_video.py --preset small`` step goes (a probe, not a benchmark).

Random data of the recipe's shape (3 x 16 x 32 x 32 pixels, batch 64, 10 classes, known-frame channels),
the recipe's loss (``multidiff.train.diffusion_loss``: per-sample CPU noise), bf16 autocast, AdamW.
Prints: eager step time; the same with the noise drawn on the GPU (the cost of per-sample CPU draws);
the 15 CUDA kernels that take the most time; and the step time with the backbone under ``torch.compile``.

    python benchmarks/_video_recipe_probe.py [--batch 64] [--device cuda] [--tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multidiff import train  # noqa: E402
from multidiff.cli import load_recipe  # noqa: E402
from multidiff.core.denoiser import Denoiser  # noqa: E402
from multidiff.core.losses import LogNormal, denoising_loss  # noqa: E402
from multidiff.core.schedules import EDMSchedule  # noqa: E402
from multidiff.nn.unet import UNet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    preset = load_recipe("train_video.py").PRESETS["tiny" if args.tiny else "small"]
    f, s = (8, 16) if args.tiny else (16, 32)
    cfg = dataclasses.replace(preset.unet, in_channels=3, cond_channels=4, num_classes=10)
    den = Denoiser(UNet(cfg), prediction="edm", schedule=EDMSchedule(), sigma_data=0.5).to(dev)
    opt = torch.optim.AdamW(den.parameters(), lr=1e-4, fused=dev.type == "cuda")
    b = args.batch
    g = torch.Generator(device="cpu").manual_seed(0)
    x0 = (torch.rand(b, 3, f, s, s, generator=g) * 2 - 1).to(dev)
    cond = {
        "cond_channels": torch.zeros(b, 4, f, s, s, device=dev),
        "labels": torch.arange(b, device=dev) % 10,
    }
    seeds = torch.arange(b)
    dist = LogNormal()

    def step_recipe() -> None:
        with train.autocast(dev):
            loss = train.diffusion_loss(den, x0, dist, seeds=seeds, weighting="edm", cond=cond).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def step_gpu_noise() -> None:
        sigma = (torch.randn(b, device=dev) * 1.2 - 1.2).exp()
        noise = torch.randn_like(x0)
        with train.autocast(dev):
            loss = denoising_loss(den, x0, dist, weighting="edm", cond=cond, sigma=sigma, noise=noise).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timeit(fn, n: int) -> float:
        for _ in range(2):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    t_recipe = timeit(step_recipe, args.steps)
    print(
        f"recipe step (CPU per-sample noise): {t_recipe * 1e3:.1f} ms, {b / t_recipe:.1f} clips/s", flush=True
    )
    t_gpu = timeit(step_gpu_noise, args.steps)
    print(f"GPU-noise step: {t_gpu * 1e3:.1f} ms, {b / t_gpu:.1f} clips/s", flush=True)
    acts = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else []
    )
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            step_gpu_noise()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60), flush=True)
    if not args.no_compile:
        den.backbone.compile()
        t0 = time.perf_counter()
        step_gpu_noise()
        print(f"compile (first step): {time.perf_counter() - t0:.1f} s", flush=True)
        t_c = timeit(step_gpu_noise, args.steps)
        print(f"compiled GPU-noise step: {t_c * 1e3:.1f} ms, {b / t_c:.1f} clips/s", flush=True)


if __name__ == "__main__":
    main()
