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

``--out`` is a run folder in the format of every multidiff trainer (``multidiff.train.checkpoint``):
``OUT/ckpt-NNNNNNNN/`` holds the weights, optimiser, RNG states and settings, written atomically, plus
``vae/``, the diffusers folder of that step; ``OUT/latest`` names the newest, and its ``vae/`` files are
copied to ``OUT`` (``config.json`` + ``diffusion_pytorch_model.safetensors``, each replaced atomically), so
``ImageAdapter(ImageAdapterConfig(space="vae", vae_path=OUT))`` loads it. ``OUT/log.jsonl`` has the losses.
Running the same command again resumes exactly where it stopped (batches, crops and posterior noise are
functions of ``(seed, step)``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from multidiff import train
from multidiff.cli import OneLineParser
from multidiff.data.common import is_hidden
from multidiff.data.image import ImageFolder
from multidiff.data.video import VideoFolder
from multidiff.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from multidiff.modalities.image import to_pixels
from multidiff.train.checkpoint import (
    CKPT_PREFIX,
    LATEST_NAME,
    check_resume_config,
    latest_checkpoint,
    publish_result,
    restore_training_state,
    save_training_state,
)
from multidiff.train.distributed import DistInfo
from multidiff.train.monitor import LOG_NAME

# Architectures (diffusers AutoencoderKL arguments). Each extra block halves the resolution:
# 3 blocks -> 4x downsampling, 4 blocks -> 8x (Stable Diffusion's VAE is (128, 256, 512, 512), 8x).
PRESETS: dict[str, dict[str, Any]] = {
    "micro": {"block_out_channels": (8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},  # tests
    "tiny": {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "norm_num_groups": 32},
    "small": {"block_out_channels": (64, 128, 256), "layers_per_block": 2, "norm_num_groups": 32},
    "small-8x": {"block_out_channels": (64, 128, 256, 256), "layers_per_block": 2, "norm_num_groups": 32},
}
RESULT = "vae"  # the folder of each checkpoint holding the AutoencoderKL; its files are copied to OUT
#: What a run trains: saved in every checkpoint, and a resume with any of them changed is refused.
SETTINGS = ("size", "batch", "preset", "latent_channels", "lr", "kl_weight", "loss", "seed")
#: The files of the recipe's former format (weights at OUT, optimiser and step beside them).
OLD_STATE = ("train_state.json", "train_state.safetensors")
#: The VAE's files published into OUT (``diffusers`` AutoencoderKL), beside the run's own.
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors", *OLD_STATE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(
        prog="train_vae",
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
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept in OUT")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    args = p.parse_args(argv)
    for name in ("steps", "batch", "size", "save_every", "log_every", "latent_channels", "keep"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.size % 2 ** (len(PRESETS[args.preset]["block_out_channels"]) - 1):
        p.error(f"--size {args.size} must be a multiple of the preset's downsampling")
    return args


# ------------------------------------------------------------------------------------------- data
def build_dataset(data: Path, size: int, seed: int) -> Dataset:
    """Images as they are, videos as random single frames; both randomly cropped to ``size``."""
    files = [p for p in data.rglob("*") if p.is_file() and not is_hidden(p, data)]  # as the folders see them
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
def write_result(ckpt: Path, vae: torch.nn.Module) -> None:
    """``ckpt/vae``: the diffusers AutoencoderKL folder of this step."""
    vae.save_pretrained(ckpt / RESULT, safe_serialization=True)


def start_over(out: Path) -> None:
    """--no-resume: remove the run's checkpoints and log (and the files of the former format)."""
    for ckpt in out.glob(f"{CKPT_PREFIX}*"):
        shutil.rmtree(ckpt)
    for name in (LATEST_NAME, LOG_NAME, *OLD_STATE):
        (out / name).unlink(missing_ok=True)


def refuse_old_run(out: Path) -> None:
    """Refuse a run folder of the recipe's former format (``OUT/train_state.json``).

    Raises:
        ValueError: One line saying what to do.
    """
    if (out / OLD_STATE[0]).is_file():
        raise ValueError(
            f"{out / OLD_STATE[0]} is a checkpoint of an older multidiff; rerun with a new --out, or with "
            f"--no-resume to start over in {out} (its weights still load as a VAE from {out} until then)"
        )


# ------------------------------------------------------------------------------------------- training
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from diffusers import AutoencoderKL

    device = train.parse_device(args.device)
    # a new or empty folder, or a run of this recipe (never another run's files: --no-resume deletes)
    out = train.check_run_folder(args.out, "train vae", also=VAE_FILES)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train_vae runs as one process; launch it without torchrun")
    config = {k: getattr(args, k) for k in SETTINGS}
    dist = DistInfo(device=device)
    # one process trains in OUT at a time; Ctrl-C finishes the step and saves it (multidiff.train)
    with train.run_lock(out):
        if args.no_resume and not (out / train.RUN_MARKER).is_file() and latest_checkpoint(out) is not None:
            raise ValueError(  # start_over deletes: only in a folder marked as this recipe's run
                f"--no-resume: {out} is not marked as a train_vae run (no {train.RUN_MARKER}); remove its "
                "checkpoints yourself, or use a new --out"
            )
        if args.no_resume:
            start_over(out)
        refuse_old_run(out)
        resume = latest_checkpoint(out)
        if resume is not None:
            check_resume_config(resume.state["config"], config, where=str(resume.path))

        torch.manual_seed(args.seed)  # the initial weights
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
        vae.to(device).train()
        opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        step = 0
        if resume is not None:
            step = restore_training_state(resume, dist=dist, model=vae, optimizer=opt)
            publish_result(resume.path / RESULT, out)  # a run killed while publishing loads from OUT again
            print(f"resuming {out} at step {step}")
        if step >= args.steps:
            print(f"{out} is already at step {step} >= --steps {args.steps}")
            return {"step": step, "log": read_losses(out, step), "out": str(out)}

        data = build_dataset(Path(args.data), args.size, args.seed)
        train.mark_run(out, "train vae")  # once the data has been read: a refused one leaves no marked run
        print(f"{len(data)} images/videos; {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters")
        batches = DataLoader(
            StepBatches(data, args.batch, args.seed),
            batch_size=None,
            sampler=range(step, args.steps),
            num_workers=args.workers,
        )
        with train.stop_signals() as stop:
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
                    raise train.NonFiniteLossError(
                        f"non-finite loss at step {step_index} (rec={rec.item()}, kl={kl.item()}); lower --lr or "
                        "--kl-weight, or check the data. Checkpoints written before are intact."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step, seen = step_index + 1, seen + x.shape[0]
                record = {"step": step, "rec": rec.item(), "kl": kl.item()}
                with open(out / LOG_NAME, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                if step % args.log_every == 0 or step == args.steps:
                    rate = seen / max(time.time() - t0, 1e-9)
                    print(
                        f"step {step}/{args.steps}  rec {record['rec']:.4f}  kl/pixel {record['kl']:.3f}  "
                        f"{rate:.1f} img/s"
                    )
                if step % args.save_every == 0 or step == args.steps or stop["signum"]:
                    ckpt = save_training_state(
                        out, step, dist=dist, model=vae, optimizer=opt, config=config,
                        data_position={"batches_drawn": step},
                        extra_files=functools.partial(write_result, vae=vae), keep=args.keep,
                    )  # fmt: skip
                    if ckpt is not None:  # the writing process: OUT loads as the newest VAE
                        publish_result(ckpt / RESULT, out)
                if stop["signum"]:  # Ctrl-C / SIGTERM: the step is done and saved
                    raise train.interrupted(stop, step, out)
    print(f"saved {out} (load with ImageAdapterConfig(space='vae', vae_path={str(out)!r}))")
    return {"step": step, "log": read_losses(out, step), "out": str(out)}


def read_losses(out: Path, step: int) -> list[dict[str, Any]]:
    """The run's per-step records up to ``step``; a step logged again after a crash and resume counts once."""
    records = {r["step"]: r for r in train.read_log(out) if "rec" in r and r["step"] <= step}
    return [records[k] for k in sorted(records)]


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "train_vae"))
