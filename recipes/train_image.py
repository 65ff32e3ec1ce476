"""Train an image diffusion model on a folder of images.

    python recipes/train_image.py --data DIR --out RUN [--preset tiny|small|base] [--steps N] [--size S]
        [--vae VAE_FOLDER]
    torchrun --nproc-per-node 4 recipes/train_image.py --data DIR --out RUN --preset base --vae VAE

Pixel space by default (small images, the ``tiny`` preset); with ``--vae`` the images are encoded by a
local AutoencoderKL (e.g. from ``recipes/train_vae.py``) and the latents cached under ``RUN/latent-cache``.

Rerunning the same command continues from the latest checkpoint in RUN (refused, with the differing
settings listed, if a setting that matters changed). The pipeline ready for ``generate_image.py`` is
written to ``RUN/pipeline`` at the end, and into every checkpoint; previews are pngs.

Reading order: settings -> image adapter (pixels or VAE, statistics fitted on the data) -> data
(ImageFolder, latent cache) -> backbone (U-Net) -> Denoiser ->
objective -> optimiser and EMA -> resume -> the loop (one optimiser step, log, preview, checkpoint) ->
final pipeline.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multidiff import train
from multidiff.cli import OneLineParser
from multidiff.data.common import data_fingerprint
from multidiff.data.image import ImageFolder, ImageFolderConfig
from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
from multidiff.nn.dit import DiTConfig
from multidiff.nn.io import config_to_dict
from multidiff.nn.unet import UNetConfig
from multidiff.pipeline import ImagePipeline, SamplingConfig
from multidiff.train import TRAIN_DEFAULTS, TrainDefaults
from multidiff.train.preview import save_image_previews


@dataclass(frozen=True)
class ImagePreset:
    """Model size and training defaults (each can be overridden on the command line).

    ``unet.in_channels`` is set from the adapter's latent channels.
    """

    unet: UNetConfig
    dit: DiTConfig
    size: int
    train: TrainDefaults


PRESETS: dict[str, ImagePreset] = {
    # ~0.2M parameters, 16 x 16 pixels: a CPU, a minute or two.
    "tiny": ImagePreset(
        train=dataclasses.replace(TRAIN_DEFAULTS["tiny"], batch=16),
        unet=UNetConfig(
            channels=(16, 32),
            num_res_blocks=1,
            attention_levels=(),
            mid_attention=True,
            head_dim=16,
            norm_groups=8,
            emb_dim=64,
            noise_freq_dim=32,
        ),
        dit=DiTConfig(patch=(2, 2), width=64, depth=2, heads=4, noise_freq_dim=32),
        size=16,
    ),
    # ~20M parameters, 64 x 64 pixels (or 32 x 32 latents of 256 px images with --vae): one GPU.
    # Measured (benchmarks/image_digits.py, H200): lr 5e-4 with 200 warm-up steps learns the labels in minutes
    # (97.7% at 1,650 steps) where the generic 2e-4 / 1,000 does not (11%); 1e-3 diverged after ~1,400 steps.
    "small": ImagePreset(
        train=dataclasses.replace(TRAIN_DEFAULTS["small"], batch=128, lr=5e-4, warmup=200),
        unet=UNetConfig(
            channels=(64, 128, 256),
            num_res_blocks=2,
            attention_levels=(1, 2),
            head_dim=64,
        ),
        dit=DiTConfig(patch=(4, 4), width=384, depth=12, heads=6),  # DiT-S/4 (pixels; S/2 on 32x32 latents)
        size=64,
    ),
    # ~110M parameters, 256 px through a VAE: several GPUs through torchrun.
    "base": ImagePreset(
        train=TRAIN_DEFAULTS["base"],
        unet=UNetConfig(
            channels=(128, 256, 384, 512),
            num_res_blocks=2,
            attention_levels=(1, 2, 3),
            head_dim=64,
        ),
        dit=DiTConfig(patch=(2, 2), width=768, depth=12, heads=12),  # DiT-B/2 on 32 x 32 latents
        size=256,
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings; those left unset come from the preset."""
    p = OneLineParser(prog="multidiff train image", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", required=True, help="folder of images (png, jpg, webp, ...), searched recursively"
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, previews, pipeline/")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size and defaults")
    p.add_argument("--size", type=int, help="image height and width (square crops)")
    p.add_argument(
        "--vae", help="local AutoencoderKL folder: train on its latents (cached) instead of pixels"
    )
    train.add_train_options(p)
    train.add_init_option(p)
    train.add_lora_options(p)
    train.add_model_options(
        p, p_mean={"edm": 0.5}
    )  # measured on digits: labels followed 98% at 0.5, ~12% at -1.2
    train.add_run_options(p, previews="pngs", items="images")
    args = p.parse_args(argv)
    try:
        train.check_model_options(args)
    except ValueError as err:
        p.error(str(err))
    preset = PRESETS[args.preset]
    train.apply_defaults(args, preset.train, size=preset.size)
    train.check_batch_bytes(args.batch, 3 * args.size**2, f"--size {args.size}", 1)
    return args


def main(argv: list[str] | None = None) -> Path:
    """Train (or resume); returns the run folder."""
    args = parse_args(argv)
    if train.is_family_folder(
        args.init
    ):  # a pretrained family: only the recipe of its modality fine-tunes it
        return train.finetune_family(args, modality="image")
    run = train.check_run_folder(args.out, "train image")  # new, empty, or a run of this recipe
    train.check_resume_early(run, args)  # a changed setting, before the data is read
    settings = train.TrainSettings.from_args(args)  # what the library reads, typed
    preset = PRESETS[args.preset]

    # --- processes and devices (torchrun / accelerate variables, or one process)
    dist, device, micro = train.start_processes(
        settings
    )  # torchrun/accelerate or one process; threads; micro-batch
    if device.type == "cuda":  # the recipe owns the backend flags
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes all run long: pick the fastest convolutions

    # --- the image adapter: pixels in [-1, 1], or a VAE whose latents are cached
    image_config = (
        ImageAdapterConfig(space="vae", vae_path=str(Path(args.vae).resolve()), sigma_data=0.5)
        if args.vae
        else ImageAdapterConfig(space="pixels")
    )
    adapter = ImageAdapter(image_config)

    # --- data: images at the training size; broken files are skipped with a warning each
    dataset = ImageFolder(
        args.data,
        ImageFolderConfig(
            size=args.size,
            labels="auto" if args.labels else "none",
            seed=args.seed,
            return_images=not args.vae,
        ),
        adapter=adapter if args.vae else None,
        cache_dir=run / "latent-cache" if args.vae else None,
    )
    if args.labels:
        train.require_labels(dataset, args.data)
    num_classes = len(dataset.classes) if args.labels else None

    # --- what training uses: files used and skipped (RUN/skipped.txt), conversions applied
    train.data_summary(dataset, run, kind="image", target=f"{args.size}x{args.size} px", enabled=dist.is_main)

    # --- resume? (refuse if a setting that matters changed)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config.update(
        data=str(Path(args.data).resolve()),
        **{args.backbone: config_to_dict(preset.unet if args.backbone == "unet" else preset.dit)},
        adapter=adapter.fingerprint(),
        num_files=len(dataset),
        data_fingerprint=data_fingerprint(dataset.entries),
        classes=dataset.classes if args.labels else None,
    )
    ckpt = train.latest_checkpoint(run)
    if ckpt is not None:
        train.check_resume(ckpt, config, settings)

    if args.init and ckpt is None and not args.vae:
        train.init_adapter_stats(adapter, args.init)  # pixels: no statistics, but the same adapter settings
    # --- latent statistics (VAE only: per-channel mean/std of the cached latents, so latents have std 0.5)
    if args.vae:
        if ckpt is not None:
            stats = ckpt.state["extra"]["adapter"]["stats"]
            adapter.set_stats(torch.tensor(stats["mean"]), torch.tensor(stats["std"]))
        elif args.init:  # fine-tuning keeps the normalisation the weights were trained with
            train.init_adapter_stats(adapter, args.init)
        else:
            adapter.fit_stats_latents(
                dataset.raw_latents(i)[None] for i in range(0, len(dataset), max(1, len(dataset) // 64))
            )
    # The per-channel range of the training latents: sampling clamps x0 predictions to it.
    with torch.no_grad():
        # spread over the folder: its first files may all be of one class (one subfolder)
        fit = [dataset.get(i, 0) for i in range(0, len(dataset), max(1, len(dataset) // 16))][:16]
        z = (
            torch.stack([it["latents"] for it in fit])
            if args.vae
            else adapter.encode(torch.stack([it["image"] for it in fit]))
        )  # (n, C, h, w)
    x0_range = (z.amin((0, 2, 3))[:, None, None], z.amax((0, 2, 3))[:, None, None])  # 2 x (C, 1, 1)
    adapter.to(device)
    if args.vae:  # every image encoded once on the device; loader workers then only read the cache
        train.cache_latents([dataset], is_main=dist.is_main, workers=args.workers)
    c = adapter.latent_channels

    # --- backbone (U-Net) and denoiser
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    backbone = train.make_backbone(
        args.backbone, preset.unet, preset.dit,
        in_channels=c, num_classes=num_classes, fused_kernels=args.fused_kernels,
    )  # fmt: skip
    objective = train.make_objective(backbone, settings, sigma_data=0.5)  # --objective edm|flow|v
    denoiser, sigma_dist, weighting = objective.denoiser.to(device), objective.sigma_dist, objective.weighting

    # --- optimiser (AdamW), EMA, non-finite guard; restored from the checkpoint when resuming; DDP
    # --init: start from a trained model; --lora: train only low-rank updates (the pipeline copies `plain`)
    denoiser, plain = train.finetune(denoiser, settings, resuming=ckpt is not None)
    pipe_copy = copy.deepcopy(plain)  # the pipeline's copy, before --shard splits the trained parameters
    training = train.start_training(denoiser, settings, ckpt, dist)
    ema, guard, step = training.ema, training.guard, training.step

    # --- the pipeline that previews and the saved model use (an EMA copy of the denoiser)
    pipe = ImagePipeline(
        pipe_copy,
        adapter,
        sampling=SamplingConfig(sampler=args.sampler, steps=args.sample_steps),
        labels=dataset.classes if args.labels else None,
        x0_range=x0_range,
        size=args.size,
    )
    to_pipeline = train.EmaToPipeline(
        ema, pipe.denoiser, denoiser
    )  # EMA weights (LoRA merged) into the pipeline

    train.compile_backbone(
        backbone, settings, device
    )  # after the pipeline's copy: only training runs compiled

    # --- the data stream: position = step x global batch; every sample has its own seed
    layout = train.StreamLayout(len(dataset), micro, args.accum, dist.world_size, args.seed)
    train.check_data_position(ckpt, layout.position(step).to_dict(), step, args.allow_data_change)
    batches = iter(
        train.stream_loader(
            dataset, layout, rank=dist.rank, start_step=step, num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
    )  # fmt: skip

    def prepare(batch: dict[str, Any]) -> dict[str, Any]:
        """Images -> latents (float32, outside autocast), labels with dropout."""
        with torch.no_grad():
            if args.vae:
                x0 = batch["latents"].to(device, non_blocking=True)  # (b, C, h, w)
            else:
                x0 = adapter.encode(batch["image"].to(device, non_blocking=True))  # (b, C, H, W)
        cond: dict[str, Any] = {}
        if num_classes is not None:
            cond["labels"] = train.drop_labels(
                batch["label"].to(device), batch["sample_seed"], args.label_dropout, num_classes
            )
        return {"x0": x0, "seeds": batch["sample_seed"], "cond": cond}

    def loss_fn(model: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        return train.diffusion_loss(
            model, b["x0"], sigma_dist, seeds=b["seeds"], weighting=weighting, sigma_data=0.5,
            cond=b["cond"],
        )  # fmt: skip

    def write_pipeline(folder: Path) -> None:
        to_pipeline.save_pipeline(pipe, folder / "pipeline", settings)

    def preview(step: int) -> None:
        to_pipeline()
        label = [k % num_classes for k in range(args.preview_num)] if num_classes else None
        images = pipe.generate(args.preview_num, label=label, seed=0, progress=False)
        save_image_previews(run / "previews" / f"step-{step:08d}", images)  # sample-K.png, grid.png

    # --- the loop (train.Session: the run folder locked; Ctrl-C or --max-minutes end it with a checkpoint)
    with train.Session(
        run,
        settings,
        training,
        dist=dist,
        device=device,
        config=config,
        extra_state=lambda: {"guard": guard.state_dict(), "adapter": adapter.to_dict()},
        extra_files=write_pipeline,
    ) as session:
        while step < args.steps:
            step = session.step(
                step, [prepare(next(batches)) for _ in range(args.accum)], loss_fn
            )  # warm-up lr, grads, EMA, log
            if session.preview_due(step):
                preview(step)
            if not session.end_step(step, layout.position(step).to_dict()):  # checkpoint when due
                break

    # --- the final pipeline (EMA weights), ready for generate_image.py
    if dist.is_main:
        to_pipeline.save_pipeline(pipe, run / "pipeline", settings)
        print(f"saved {run / 'pipeline'}", flush=True)
    train.cleanup_distributed()
    return run


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "train image"))
