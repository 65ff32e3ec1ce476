"""Train a small diffusers AutoencoderKL on a folder of images and/or video frames.

No pretrained VAE can be fetched offline, so latent image and video models start here:

    python recipes/train_vae.py --data DIR --out VAE_DIR --steps 20000 --batch 16 --size 64

DIR holds images (png, jpg, ...) and/or videos (mp4, webm, gif, ...), in any subfolders; every step
draws a batch of random images and random single frames of videos, each randomly cropped to ``--size``.
The objective is the KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, Sec. 3 and
App. G): a reconstruction loss (mean L1 or MSE over pixels) plus ``kl_weight`` times the KL divergence
of the diagonal-Gaussian posterior from N(0, I), summed over latent elements and divided by the number
of pixel values (so ``kl_weight = 1e-6`` is LDM's ratio). No perceptual or adversarial loss: this is a
small, simple VAE; its latent statistics are measured later by ``ImageAdapter.fit_stats``.

``--out`` becomes a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) that
``ImageAdapter(ImageAdapterConfig(space="vae", vae_path=OUT))`` loads. The optimiser state and step sit
beside it (``train_state.safetensors`` / ``train_state.json``); running the same command again resumes
exactly where it stopped (batches, crops and posterior noise are functions of ``(seed, step)``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from multidiff import train
from multidiff.data.image import ImageFolder
from multidiff.data.video import VideoFolder
from multidiff.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from multidiff.modalities.image import to_pixels
from multidiff.train.checkpoint import optimizer_state_from_tensors, optimizer_state_to_tensors

# Architectures (diffusers AutoencoderKL arguments). Each extra block halves the resolution:
# 3 blocks -> 4x downsampling, 4 blocks -> 8x (Stable Diffusion's VAE is (128, 256, 512, 512), 8x).
PRESETS: dict[str, dict[str, Any]] = {
    "micro": {"block_out_channels": (8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},  # tests
    "tiny": {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "norm_num_groups": 32},
    "small": {"block_out_channels": (64, 128, 256), "layers_per_block": 2, "norm_num_groups": 32},
    "small-8x": {"block_out_channels": (64, 128, 256, 256), "layers_per_block": 2, "norm_num_groups": 32},
}
STATE_JSON, STATE_TENSORS = "train_state.json", "train_state.safetensors"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="folder of images and/or videos")
    p.add_argument("--out", required=True, help="output folder (a diffusers AutoencoderKL folder)")
    p.add_argument("--steps", type=int, default=20000, help="total optimiser steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="training crop size (pixels, square)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--loss", default="l1", choices=("l1", "mse"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    args = p.parse_args(argv)
    for name in ("steps", "batch", "size", "save_every", "log_every", "latent_channels"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.size % 2 ** (len(PRESETS[args.preset]["block_out_channels"]) - 1):
        p.error(f"--size {args.size} must be a multiple of the preset's downsampling")
    return args


# ------------------------------------------------------------------------------------------- data
def build_dataset(data: Path, size: int, seed: int) -> Dataset:
    """Images as they are, videos as random single frames; both randomly cropped to ``size``."""
    files = [p for p in data.rglob("*") if p.is_file()]
    parts: list[Dataset] = []
    if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in files):
        parts.append(ImageFolder(data, size=size, crop="random", labels="none", seed=seed))
    if any(p.suffix.lower() in VIDEO_EXTENSIONS for p in files):
        parts.append(VideoFolder(data, frames=1, size=size, crop="random", labels="none", seed=seed))
    if not parts:
        raise ValueError(f"{data} holds no image ({IMAGE_EXTENSIONS}) or video ({VIDEO_EXTENSIONS}) file")
    return ConcatDataset(parts)


class StepBatches(Dataset):
    """Batch ``s`` = the items drawn for step ``s``: a pure function of ``(seed, s)``, so resume is exact."""

    def __init__(self, data: ConcatDataset, batch: int, seed: int) -> None:
        self.data, self.batch, self.seed = data, batch, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> torch.Tensor:
        picks = np.random.default_rng([self.seed, step]).integers(0, len(self.data), self.batch)
        images = []
        for i in picks:
            k = int(np.searchsorted(self.data.cumulative_sizes, i, side="right"))
            part = self.data.datasets[k]
            item = part.get(int(i) - (self.data.cumulative_sizes[k - 1] if k else 0), epoch=step)
            images.append(item["image"] if "image" in item else item["frames"][0])  # (H, W, C)
        return torch.stack(images)  # (B, H, W, C) uint8


# ------------------------------------------------------------------------------------------- checkpoints
def save(
    out: Path,
    vae: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    args: argparse.Namespace,
    log: list,
) -> None:
    """Write weights, optimiser state and step; each file is replaced atomically, the step JSON last."""
    from safetensors.torch import save_file

    tmp = out / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        vae.save_pretrained(tmp, safe_serialization=True)
        tensors, structure = optimizer_state_to_tensors(opt)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(tensors, str(tmp / STATE_TENSORS), metadata={"step": str(step)})
        state = {"step": step, "optimizer": structure, "args": vars(args), "log": log}
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=1))
        names = sorted(p.name for p in tmp.iterdir() if p.name != STATE_JSON) + [STATE_JSON]
        for name in names:  # the step file last: a crash before it leaves the previous step's JSON
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_state(out: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    from safetensors import safe_open

    if not (out / STATE_JSON).is_file():
        return None
    state = json.loads((out / STATE_JSON).read_text())
    with safe_open(str(out / STATE_TENSORS), framework="pt") as f:
        if f.metadata().get("step") != str(state["step"]):
            raise ValueError(
                f"{out}: {STATE_TENSORS} and {STATE_JSON} are from different steps; start over with --no-resume"
            )
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return state, tensors


# ------------------------------------------------------------------------------------------- training
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from diffusers import AutoencoderKL

    out, device = Path(args.out), torch.device(args.device)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # the initial weights

    resumed = None if args.no_resume else load_state(out)
    if resumed is not None:
        state, opt_tensors = resumed
        vae = AutoencoderKL.from_pretrained(str(out), local_files_only=True, low_cpu_mem_usage=False)
        step, log = int(state["step"]), list(state["log"])
        print(f"resuming {out} at step {step}")
    else:
        preset = PRESETS[args.preset]
        n = len(preset["block_out_channels"])
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            latent_channels=args.latent_channels,
            sample_size=args.size,
            **preset,
        )
        step, log = 0, []
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    if resumed is not None:
        optimizer_state_from_tensors(opt, opt_tensors, state["optimizer"])
    if step >= args.steps:
        print(f"{out} is already at step {step} >= --steps {args.steps}")
        return {"step": step, "log": log, "out": str(out)}

    data = build_dataset(Path(args.data), args.size, args.seed)
    print(f"{len(data)} images/videos; {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters")
    batches = DataLoader(
        StepBatches(data, args.batch, args.seed),
        batch_size=None,
        sampler=range(step, args.steps),
        num_workers=args.workers,
    )
    # one process trains in OUT at a time; Ctrl-C finishes the step and saves it (multidiff.train)
    with train.run_lock(out), train.stop_signals() as stop:
        t0, seen = time.time(), 0
        for step_index, images in zip(range(step, args.steps), batches):
            x = to_pixels(images).to(device)  # (B, C, H, W) in [-1, 1]
            posterior = vae.encode(x).latent_dist
            noise_gen = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + step_index)
            z = posterior.sample(generator=noise_gen)  # reparameterised: x = mean + std * eps
            x_hat = vae.decode(z).sample
            rec = F.l1_loss(x_hat, x) if args.loss == "l1" else F.mse_loss(x_hat, x)
            kl = posterior.kl().mean() / x[0].numel()  # KL summed over latents, per pixel value
            loss = rec + args.kl_weight * kl
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at step {step_index}: rec={rec.item()}, kl={kl.item()}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, seen = step_index + 1, seen + x.shape[0]
            log.append({"step": step, "rec": rec.item(), "kl": kl.item()})
            if step % args.log_every == 0 or step == args.steps:
                rate = seen / max(time.time() - t0, 1e-9)
                print(
                    f"step {step}/{args.steps}  rec {log[-1]['rec']:.4f}  kl/pixel {log[-1]['kl']:.3f}  {rate:.1f} img/s"
                )
            if step % args.save_every == 0 or step == args.steps or stop["signum"]:
                save(out, vae, opt, step, args, log)
            if stop["signum"]:  # Ctrl-C / SIGTERM: the step is done and saved
                raise train.interrupted(stop, step, out)
    print(f"saved {out} (load with ImageAdapterConfig(space='vae', vae_path={str(out)!r}))")
    return {"step": step, "log": log, "out": str(out)}


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "train_vae"))
