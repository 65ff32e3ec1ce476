"""Train a video diffusion model with frame-mask conditioning on a folder of video clips.

    python recipes/train_video.py --data DIR --out RUN [--preset tiny|small|base] [--steps N] [--frames F]
        [--size S] [--vae VAE_FOLDER] [--labels]
    python recipes/train_video.py --data DIR --out RUN --captions [--text-encoder CLIP_OR_T5_FOLDER]
    torchrun --nproc-per-node 4 recipes/train_video.py --data DIR --out RUN --preset base --vae VAE

One model learns unconditional generation, image-to-video, continuation and interpolation: every clip
gets a random set of known frames (none, the first, the first few, both ends; :mod:`multidiff.train.masks`)
that the backbone sees as extra input channels, and the loss is taken on the other frames. Pixel space by
default (small frames, the ``tiny`` preset); with ``--vae`` the frames are encoded one by one by a local
AutoencoderKL (e.g. from ``recipes/train_vae.py``) and the latents cached under ``RUN/latent-cache``.
With ``--images DIR``, every ``--image-every``-th step is a batch of still images trained into the same
weights as one-frame clips (never given known frames), so an image collection can teach appearance.

With ``--captions`` (captions from ``DIR/metadata.csv``) the U-Net cross-attends to the captions' tokens:
a small byte-level text encoder is trained jointly with the denoiser, or ``--text-encoder`` names a local
transformers CLIP/T5 folder that stays frozen. Captions are replaced by the null caption with probability
``--caption-dropout`` (drawn from each sample's own seed), which enables classifier-free guidance. With
``--images`` too, the image folder needs its own ``metadata.csv`` with a caption for every image (the run
is refused otherwise, rather than training the stills silently as uncaptioned).
With ``--labels`` too, the labels come from the ``label`` column of the same ``metadata.csv`` files.

``--init`` takes a trained multidiff run or pipeline folder, or a diffusers folder of a supported pretrained
family (AnimateDiff; :mod:`multidiff.train.family`): that model then trains with its own VAE, text encoder
and objective on the captioned clips of ``--data``, whole or as a LoRA (``--lora RANK``).

Rerunning the same command continues from the latest checkpoint in RUN (refused, with the differing
settings listed, if a setting that matters changed). The pipeline ready for ``generate_video.py`` is
written to ``RUN/pipeline`` at the end, and into every checkpoint; previews are gifs.

Reading order: settings -> video adapter (pixels or VAE, statistics fitted on the data) -> data
(VideoFolder, latent cache) -> text encoder -> backbone (video U-Net with C + 1 conditioning channels) ->
Denoiser -> objective -> optimiser and EMA -> resume -> the loop (one optimiser step, log, preview,
checkpoint) -> final pipeline.
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
from multidiff.data.video import VideoFolder, VideoFolderConfig
from multidiff.modalities.image import ImageAdapterConfig
from multidiff.modalities.video import VideoAdapter
from multidiff.nn.dit import DiTConfig
from multidiff.nn.io import config_to_dict
from multidiff.nn.unet import UNetConfig
from multidiff.pipeline import SamplingConfig, VideoPipeline
from multidiff.train import TRAIN_DEFAULTS, TrainDefaults
from multidiff.train.masks import FrameMaskCurriculum, frame_cond, sample_frame_masks
from multidiff.train.preview import save_video_previews


@dataclass(frozen=True)
class VideoPreset:
    """Model size and training defaults (each can be overridden on the command line).

    ``in_channels`` and ``cond_channels`` of either backbone are set from the adapter's latent channels C
    (C and C + 1); ``--backbone`` picks the U-Net or the factorised video DiT.
    """

    unet: UNetConfig
    dit: DiTConfig
    frames: int
    size: int
    dit_lr: float
    train: TrainDefaults


PRESETS: dict[str, VideoPreset] = {
    # ~0.2M parameters, 8 frames of 16 x 16 pixels, temporal attention only in the middle: a CPU, ~3 minutes.
    "tiny": VideoPreset(
        train=dataclasses.replace(TRAIN_DEFAULTS["tiny"], steps=200),
        unet=UNetConfig(
            channels=(16, 32),
            num_res_blocks=1,
            attention_levels=(),
            mid_attention=True,
            head_dim=16,
            norm_groups=8,
            emb_dim=64,
            noise_freq_dim=32,
            video=True,
        ),
        dit=DiTConfig(patch=(1, 2, 2), width=64, depth=2, heads=4, attention="factorised"),
        frames=8,
        size=16,
        dit_lr=1e-3,
    ),
    # ~20M parameters, 16 frames of 64 x 64 pixels (or 32 x 32 latents of 256 px frames with --vae): one GPU.
    # ~5M parameters, 16 frames of 32 x 32 pixels (or 32 x 32 latents of 256 px frames with --vae): one GPU,
    # minutes. Widths 32-64-128 cost 59 GFLOP per 16-frame clip (forward + backward), a quarter of
    # 64-128-256 (235), which trained 4x fewer clips per minute and learned no more in a short run.
    "small": VideoPreset(
        train=dataclasses.replace(TRAIN_DEFAULTS["small"], batch=64, lr=1e-3, warmup=200),
        unet=UNetConfig(
            channels=(32, 64, 128),
            num_res_blocks=2,
            attention_levels=(1, 2),
            head_dim=32,
            video=True,
        ),
        # DiT-S width and heads (Peebles and Xie 2023, Table 1), 12 blocks alternating spatial and temporal
        # attention (Latte's interleaved variant), 4x4 patches per frame: 32M parameters, 131 GFLOP a clip.
        dit=DiTConfig(patch=(1, 4, 4), width=384, depth=12, heads=6, attention="factorised"),
        frames=16,
        size=32,
        dit_lr=5e-4,
    ),
    # ~110M parameters, 16 frames at 256 px through a VAE: several GPUs through torchrun.
    "base": VideoPreset(
        train=TRAIN_DEFAULTS["base"],
        unet=UNetConfig(
            channels=(128, 256, 384, 512),
            num_res_blocks=2,
            attention_levels=(1, 2, 3),
            head_dim=64,
            video=True,
        ),
        dit=DiTConfig(patch=(1, 2, 2), width=768, depth=12, heads=12, attention="factorised"),
        frames=16,
        size=256,
        dit_lr=1e-4,
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings; those left unset come from the preset."""
    p = OneLineParser(prog="multidiff train video", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", required=True, help="folder of videos (mp4, webm, mov, avi, gif), searched recursively"
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, previews, pipeline/")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size and defaults")
    p.add_argument("--frames", type=int, help="frames per training clip")
    p.add_argument("--size", type=int, help="frame height and width (square crops)")
    p.add_argument("--fps", type=float, help="read every file at this frame rate (default: its own)")
    p.add_argument("--stride", type=int, help="keep every n-th frame instead of --fps")
    p.add_argument(
        "--vae", help="local AutoencoderKL folder: train on its latents (cached) instead of pixels"
    )
    p.add_argument(
        "--patch",
        type=int,
        help="--backbone dit: spatial patch size of the video DiT (default: the preset's; with --vae, "
        "smaller patches keep the tokens per frame of a pixel model)",
    )
    p.add_argument(
        "--images",
        help="folder of images trained into the same weights as one-frame clips (with --captions: "
        "captioned in its own metadata.csv)",
    )
    p.add_argument(
        "--image-every", type=int, default=4, help="with --images: every n-th step is an image batch"
    )
    p.add_argument("--p-none", type=float, default=0.4, help="share of clips with no known frame")
    p.add_argument("--p-first", type=float, default=0.25, help="share with the first frame known")
    p.add_argument("--p-first-k", type=float, default=0.2, help="share with the first few frames known")
    p.add_argument("--p-ends", type=float, default=0.15, help="share with both end frames known")
    train.add_train_options(p)
    train.add_init_option(p)
    train.add_lora_options(p)
    # EDM at ln σ ~ N(0.5, 1.2²) rather than EDM's image default -1.2: the frames of a clip repeat its content,
    # so what the clip shows (which digit, that it stays the same) is decided at high σ, where -1.2 hardly
    # trains (benchmarks/RESULTS.md, issue 9)
    train.add_model_options(p, p_mean={"edm": 0.5})
    p.add_argument(
        "--guidance",
        type=float,
        help="classifier-free guidance saved as the pipeline's default (previews use it too); default 1.5 "
        "with --labels or --captions (the scale that met issue 9's bar on moving digits), else 1",
    )
    train.add_caption_options(p)
    train.add_run_options(p, previews="gifs", items="videos")
    args = p.parse_args(argv)
    try:
        train.check_caption_dropout(args.caption_dropout)
    except ValueError as err:
        p.error(f"--caption-dropout: {err}")
    preset = PRESETS[args.preset]
    if args.lr is None and args.backbone == "dit":
        args.lr = preset.dit_lr
    args.size_given = args.size is not None  # --init FAMILY: frames at the family's own size unless given
    train.apply_defaults(args, preset.train, frames=preset.frames, size=preset.size)
    pixels = args.frames * 3 * args.size**2  # uint8 per clip, as the loader holds it
    train.check_batch_bytes(args.batch, pixels, f"--frames {args.frames} --size {args.size}", 1)
    try:
        train.check_model_options(args)
    except ValueError as err:
        p.error(str(err))
    if args.guidance is None:
        args.guidance = 1.5 if (args.labels or args.captions) else 1.0
    return args


def main(argv: list[str] | None = None) -> Path:
    """Train (or resume); returns the run folder."""
    args = parse_args(argv)
    if train.is_family_folder(
        args.init
    ):  # a pretrained family (diffusers folder): its own parts, its objective
        return train.finetune_family(args, modality="video")
    run = train.check_run_folder(args.out, "train video")  # new, empty, or a run of this recipe
    train.check_resume_early(run, args)  # a changed setting, before the data is read
    settings = train.TrainSettings.from_args(args)  # what the library reads, typed
    preset = PRESETS[args.preset]
    try:
        curriculum = FrameMaskCurriculum(args.p_none, args.p_first, args.p_first_k, args.p_ends)
    except ValueError as err:
        raise ValueError(str(err)) from None

    # --- processes and devices (torchrun / accelerate variables, or one process)
    dist, device, micro = train.start_processes(
        settings
    )  # torchrun/accelerate or one process; threads; micro-batch
    if device.type == "cuda":  # the recipe owns the backend flags
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes all run long: pick the fastest convolutions
    if args.patch is not None and (args.patch < 1 or args.backbone != "dit"):
        raise ValueError("--patch takes a positive size and goes with --backbone dit")

    # --- the video adapter: pixels in [-1, 1], or a per-frame VAE whose latents are cached
    image_config = (
        ImageAdapterConfig(space="vae", vae_path=str(Path(args.vae).resolve()), sigma_data=0.5)
        if args.vae
        else ImageAdapterConfig(space="pixels")
    )
    adapter = VideoAdapter.from_config(image_config)

    # --- data: clips of F frames at the training size; broken files are skipped with a warning each.
    # With --captions, captions (and labels) come from metadata.csv, the videos' and the images' own.
    label_mode = "metadata" if args.captions else "auto" if args.labels else "none"
    if args.captions:
        try:
            for folder in (args.data, args.images):
                if folder is not None:
                    train.require_caption_metadata(folder)
        except ValueError as err:
            raise ValueError(f"--captions: {err}") from None
    dataset = VideoFolder(
        args.data,
        VideoFolderConfig(
            frames=args.frames,
            fps=args.fps,
            stride=args.stride,
            size=args.size,
            labels=label_mode,
            seed=args.seed,
            return_frames=not args.vae,
        ),
        adapter=adapter if args.vae else None,
        cache_dir=run / "latent-cache" if args.vae else None,
        # pixels: every file decoded once into a uint8 cache, so loading never waits on a decoder
        frame_cache_dir=None if args.vae else run / "frame-cache",
    )
    if args.labels:
        train.require_labels(dataset, args.data)
    # Optional still images: one-frame clips of the same size, through the same adapter and cache.
    images = None
    if args.images:
        if args.image_every < 1:
            raise ValueError(f"--image-every must be >= 1, got {args.image_every}")
        images = ImageFolder(
            args.images,
            ImageFolderConfig(
                size=args.size,
                labels=label_mode,
                seed=args.seed,
                as_video=True,
                return_images=not args.vae,
            ),
            adapter=adapter if args.vae else None,
            cache_dir=run / "latent-cache" if args.vae else None,
        )
        if args.labels and images.classes != dataset.classes:
            raise ValueError(
                f"--labels: the image classes {images.classes} differ from the video classes {dataset.classes}"
            )
    num_classes = len(dataset.classes) if args.labels else None
    captions: list[str] = []  # the videos' distinct captions: the preview prompts
    if args.captions:
        try:
            captions = train.distinct_captions(dataset.entries, args.data)  # every file has one
            if images is not None:
                train.distinct_captions(images.entries, args.images)
        except ValueError as err:
            raise ValueError(f"--captions: {err}") from None

    if not args.vae and dist.is_main:  # settings checked: decode every clip once into the frame cache
        dataset.build_frame_cache(workers=max(1, args.workers), progress=True)
    train.barrier()

    # --- what training uses: files used and skipped (RUN/skipped.txt), conversions applied
    train.data_summary(
        dataset,
        run,
        kind="video",
        target=f"{args.frames} frames of {args.size}x{args.size} px",
        enabled=dist.is_main,
    )

    # --- resume? (refuse if a setting that matters changed)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config.update(
        data=str(Path(args.data).resolve()),
        **{args.backbone: config_to_dict(preset.unet if args.backbone == "unet" else preset.dit)},
        adapter=adapter.fingerprint(),
        num_files=len(dataset),
        data_fingerprint=data_fingerprint(dataset.entries),
        num_images=None if images is None else len(images),
        images_fingerprint=None if images is None else data_fingerprint(images.entries),
        images=None if images is None else str(Path(args.images).resolve()),
        classes=dataset.classes if args.labels else None,
    )
    if args.text_encoder:
        config["text_encoder"] = str(Path(args.text_encoder).resolve())
    ckpt = train.latest_checkpoint(run)
    if ckpt is not None:
        train.check_resume(ckpt, config, settings)

    if args.init and ckpt is None and not args.vae:
        train.init_adapter_stats(adapter, args.init)  # pixels: no statistics, but the same adapter settings
    # --- latent statistics (VAE only: per-channel mean/std of the cached latents, so latents have std 0.5)
    if args.vae:
        if ckpt is not None:
            stats = ckpt.state["extra"]["adapter"]["image"]["stats"]
            adapter.image.set_stats(torch.tensor(stats["mean"]), torch.tensor(stats["std"]))
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
            else adapter.encode(torch.stack([it["frames"] for it in fit]))
        )
    x0_range = (
        z.amin((0, 2, 3, 4))[:, None, None, None],
        z.amax((0, 2, 3, 4))[:, None, None, None],
    )  # 2 x (C, 1, 1, 1)
    adapter.to(device)
    if args.vae:  # every clip encoded once on the device; loader workers then only read the cache
        train.cache_latents(
            [d for d in (dataset, images) if d is not None], is_main=dist.is_main, workers=args.workers
        )
    c = adapter.latent_channels

    # --- backbone (video U-Net; C + 1 extra channels: known latents and the frame mask) and denoiser; with
    # captions, a text encoder whose tokens the U-Net cross-attends to (Rombach et al. 2022, Sec. 3.3)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    try:
        text_encoder = train.caption_encoder(args.captions, args.text_encoder, args.preset)
    except ValueError as err:
        raise ValueError(f"--text-encoder: {err}") from err
    context_dim = None if text_encoder is None else int(text_encoder.dim)  # type: ignore[arg-type]
    dit_config = preset.dit
    if args.patch:
        dit_config = dataclasses.replace(dit_config, patch=(dit_config.patch[0], args.patch, args.patch))
    backbone = train.make_backbone(
        args.backbone, preset.unet, dit_config,
        in_channels=c, cond_channels=c + 1, num_classes=num_classes, context_dim=context_dim,
        fused_kernels=args.fused_kernels,
    )  # fmt: skip
    objective = train.make_objective(backbone, settings, sigma_data=0.5)  # --objective edm|flow|v
    denoiser, sigma_dist, weighting = objective.denoiser.to(device), objective.sigma_dist, objective.weighting
    # What is trained, averaged and checkpointed: the denoiser, or the denoiser with its text encoder.
    # --init: start from a trained model; --lora: train only low-rank updates (the pipeline copies `plain`)
    denoiser, plain = train.finetune(denoiser, settings, resuming=ckpt is not None)
    net = train.trained_net(denoiser, text_encoder).to(device)

    # --- optimiser (AdamW), EMA, non-finite guard; restored from the checkpoint when resuming; DDP
    pipe_copy = copy.deepcopy(plain)  # the pipeline's copies, before --shard splits the trained parameters
    pipe_text = None if text_encoder is None else copy.deepcopy(text_encoder)
    training = train.start_training(net, settings, ckpt, dist)
    ema, guard, step = training.ema, training.guard, training.step

    # --- the pipeline that previews and the saved model use (EMA copies of the denoiser and text encoder)
    pipe = VideoPipeline(
        pipe_copy,
        adapter,
        sampling=SamplingConfig(sampler=args.sampler, steps=args.sample_steps, guidance=args.guidance),
        labels=dataset.classes if args.labels else None,
        window=args.frames,
        x0_range=x0_range,
        size=args.size,
        text_encoder=pipe_text,
    )
    # The pipeline's modules under the training module's names, for ema.copy_to.
    pipe_net = train.trained_net(pipe.denoiser, pipe.text_encoder)
    to_pipeline = train.EmaToPipeline(ema, pipe_net, net)  # EMA weights (LoRA merged) into the pipeline

    if device.type == "cuda" and args.backbone == "unet":
        backbone.to(memory_format=torch.channels_last)  # cuDNN's fast NHWC convolutions
    train.compile_backbone(
        backbone, settings, device
    )  # after the pipeline's copy: only training runs compiled

    # --- the data streams: position = steps x global batch; every sample has its own seed. With --images,
    # step s is an image step when s % image_every == image_every - 1, so both positions follow from s.
    def is_image_step(s: int) -> bool:
        return images is not None and s % args.image_every == args.image_every - 1

    def image_steps(s: int) -> int:
        """Image steps among the first s steps."""
        return 0 if images is None else s // args.image_every

    def data_position(s: int) -> dict[str, Any]:
        video = layout.position(s - image_steps(s)).to_dict()
        if image_layout is None:
            return video
        return {"video": video, "images": image_layout.position(image_steps(s)).to_dict()}

    def loader(data: Any, lay: train.StreamLayout, start: int) -> Any:
        return iter(
            train.stream_loader(
                data, lay, rank=dist.rank, start_step=start, num_workers=args.workers,
                pin_memory=device.type == "cuda",
            )
        )  # fmt: skip

    layout = train.StreamLayout(len(dataset), micro, args.accum, dist.world_size, args.seed)
    image_layout = None
    if images is not None:
        image_layout = train.StreamLayout(len(images), micro, args.accum, dist.world_size, args.seed + 1)
    train.check_data_position(ckpt, data_position(step), step, args.allow_data_change)
    batches = loader(dataset, layout, step - image_steps(step))
    image_batches = None if image_layout is None else loader(images, image_layout, image_steps(step))

    def prepare(batch: dict[str, Any]) -> dict[str, Any]:
        """Frames -> latents (float32, outside autocast), known-frame mask and channels, labels and
        captions with dropout."""
        with torch.no_grad():
            if args.vae:
                x0 = batch["latents"].to(device, non_blocking=True)  # (b, C, F, h, w)
            else:
                x0 = adapter.encode(batch["frames"].to(device, non_blocking=True))  # (b, C, F, H, W)
        # known frames (none for one-frame clips, i.e. images)
        known = sample_frame_masks(curriculum, x0.shape[2], batch["sample_seed"]).to(
            device
        )  # (b, 1, F, 1, 1)
        cond: dict[str, Any] = {"cond_channels": frame_cond(x0, known)}  # (b, C + 1, F, h, w)
        if num_classes is not None:
            cond["labels"] = train.drop_labels(
                batch["label"].to(device), batch["sample_seed"], args.label_dropout, num_classes
            )
        if text_encoder is not None:
            cond["captions"] = train.drop_captions(
                list(batch["caption"]), batch["sample_seed"], args.caption_dropout
            )
        # the loss is taken on the frames the model must generate
        return {"x0": x0, "seeds": batch["sample_seed"], "cond": cond, "mask": 1 - known}

    def loss_fn(model: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        return train.diffusion_loss(
            model, b["x0"], sigma_dist, seeds=b["seeds"], weighting=weighting, sigma_data=0.5,
            cond=b["cond"], mask=b["mask"],
        )  # fmt: skip

    def write_pipeline(folder: Path) -> None:
        to_pipeline.save_pipeline(pipe, folder / "pipeline", settings)

    def preview(step: int) -> None:
        to_pipeline()
        label = [k % num_classes for k in range(args.preview_num)] if num_classes else None
        prompt = [captions[k % len(captions)] for k in range(args.preview_num)] if captions else None
        videos = pipe.generate(
            args.preview_num, args.frames, label=label, prompt=prompt, seed=0, progress=False
        )
        save_video_previews(run / "previews" / f"step-{step:08d}", videos, fps=8)  # gifs, grid.gif, strip.png

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
                step,
                [prepare(next(image_batches if is_image_step(step) else batches)) for _ in range(args.accum)],
                loss_fn,
            )  # warm-up lr, grads, EMA, log
            if session.preview_due(step):
                preview(step)
            if not session.end_step(step, data_position(step)):  # checkpoint when due
                break

    # --- the final pipeline (EMA weights), ready for generate_video.py
    if dist.is_main:
        to_pipeline.save_pipeline(pipe, run / "pipeline", settings)
        print(f"saved {run / 'pipeline'}", flush=True)
    train.cleanup_distributed()
    return run


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "train video"))
