"""Train a mel-spectrogram diffusion model on a folder of audio files.

    python recipes/train_audio.py --data DIR --out RUN [--preset tiny|small|base] [--steps N] [--labels]
    python recipes/train_audio.py --data DIR --out RUN --captions [--text-encoder CLIP_OR_T5_FOLDER]
    torchrun --nproc-per-node 4 recipes/train_audio.py --data DIR --out RUN --preset base

Rerunning the same command continues from the latest checkpoint in RUN (refused, with the differing
settings listed, if a setting that matters changed). The pipeline ready for ``generate_audio.py`` is
written to ``RUN/pipeline`` at the end, and into every checkpoint.

With ``--captions`` (captions from ``DIR/metadata.csv``) the U-Net cross-attends to the captions' tokens:
a small byte-level text encoder is trained jointly with the denoiser, or ``--text-encoder`` names a local
transformers CLIP/T5 folder that stays frozen. Captions are replaced by the null caption with probability
``--caption-dropout`` (drawn from each sample's own seed), which enables classifier-free guidance.

Reading order: settings -> data (AudioFolder) -> mel adapter (statistics fitted on the data, Griffin-Lim
or a HiFi-GAN vocoder) -> text encoder -> backbone -> Denoiser -> objective -> optimiser and EMA -> resume
-> the loop (one optimiser step, log, preview, checkpoint) -> final pipeline.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multidiff import train
from multidiff.cli import OneLineParser
from multidiff.data.audio import AudioFolder, AudioFolderConfig
from multidiff.data.common import data_fingerprint
from multidiff.modalities.audio import PRESETS as MEL_PRESETS
from multidiff.modalities.audio import MelAdapter, MelAdapterConfig, MelSpec
from multidiff.nn.dit import DiTConfig
from multidiff.nn.io import config_to_dict
from multidiff.nn.unet import UNET_PRESETS, UNetConfig
from multidiff.pipeline import AudioPipeline, SamplingConfig, mel_frame_mask
from multidiff.train import TRAIN_DEFAULTS, TrainDefaults


@dataclass(frozen=True)
class AudioPreset:
    """Model size and training defaults (each can be overridden on the command line)."""

    mel: MelSpec
    unet: UNetConfig
    dit: DiTConfig
    seconds: float
    train: TrainDefaults


PRESETS: dict[str, AudioPreset] = {
    # A very small U-Net (~0.8M parameters, attention only in the middle) on 16 kHz / 32-mel clips of one
    # second: trains on a CPU in a few minutes.
    "tiny": AudioPreset(
        train=TRAIN_DEFAULTS["tiny"],
        mel=MelSpec(
            sample_rate=16000, n_fft=512, win_length=512, hop_length=128, n_mels=32, fmax=8000.0, edge_pad=192
        ),
        unet=UNetConfig(
            in_channels=1,
            channels=(16, 32, 64),
            num_res_blocks=1,
            attention_levels=(),
            mid_attention=True,
            head_dim=32,
            norm_groups=8,
            emb_dim=128,
            noise_freq_dim=64,
        ),
        dit=DiTConfig(in_channels=1, patch=(2, 2), width=64, depth=2, heads=4, noise_freq_dim=64),
        seconds=1.0,
    ),
    # ~4.7M parameters (mel-S at half width) on HiFi-GAN 22.05 kHz / 80-mel clips of 1 s: a quarter of
    # mel-S's work per clip (11 vs 45 GFLOP forward + backward); the bundled spoken-digit model's size.
    "compact": AudioPreset(
        train=dataclasses.replace(TRAIN_DEFAULTS["small"], steps=20_000),
        mel=MEL_PRESETS["hifigan-22k"],
        unet=dataclasses.replace(UNET_PRESETS["mel-S"], channels=(32, 64, 64, 128), norm_groups=16),
        dit=DiTConfig(in_channels=1, patch=(4, 4), width=256, depth=8, heads=4),
        seconds=1.0,
    ),
    # ~18.6M parameters on HiFi-GAN 22.05 kHz / 80-mel clips of 3 s: one GPU, an afternoon.
    "small": AudioPreset(
        train=dataclasses.replace(TRAIN_DEFAULTS["small"], steps=50_000),
        mel=MEL_PRESETS["hifigan-22k"],
        unet=UNET_PRESETS["mel-S"],
        dit=DiTConfig(in_channels=1, patch=(4, 4), width=384, depth=12, heads=6),  # DiT-S/4
        seconds=3.0,
    ),
    # ~75M parameters: a GPU (or several through torchrun) for a day or more.
    "base": AudioPreset(
        train=dataclasses.replace(TRAIN_DEFAULTS["base"], steps=200_000),
        mel=MEL_PRESETS["hifigan-22k"],
        unet=UNET_PRESETS["mel-75M"],
        dit=DiTConfig(in_channels=1, patch=(4, 4), width=768, depth=12, heads=12),  # DiT-B/4
        seconds=3.0,
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings; those left unset come from the preset."""
    p = OneLineParser(prog="multidiff train audio", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", required=True, help="folder of audio files (wav, flac, ogg, mp3), searched recursively"
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, previews, pipeline/")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size and defaults")
    p.add_argument("--seconds", type=float, help="training clip length")
    train.add_train_options(p)
    train.add_init_option(p)
    train.add_lora_options(p)
    train.add_caption_options(p)
    p.add_argument("--vocoder", help="HiFi-GAN checkpoint file or folder (default: Griffin-Lim, no weights)")
    train.add_model_options(p, p_mean={"edm": -0.4})  # measured: labels heard 72% at -1.2, 93-99% at -0.4
    train.add_run_options(p, previews="wavs/PNGs", items="clips")
    args = p.parse_args(argv)
    try:
        train.check_caption_dropout(args.caption_dropout)
    except ValueError as err:
        p.error(f"--caption-dropout: {err}")
    try:
        train.check_model_options(args)
    except ValueError as err:
        p.error(str(err))
    preset = PRESETS[args.preset]
    train.apply_defaults(args, preset.train, seconds=preset.seconds)
    samples = round(args.seconds * preset.mel.sample_rate)
    try:
        preset.mel.check_samples(samples)
    except ValueError as err:
        raise ValueError(f"--seconds {args.seconds:g}: {err}") from None
    train.check_batch_bytes(args.batch, samples, f"--seconds {args.seconds:g}")
    return args


def run_config(args: argparse.Namespace, dataset: AudioFolder) -> dict[str, Any]:
    """Everything that defines the run; stored in every checkpoint and compared on resume."""
    preset = PRESETS[args.preset]
    config = {k: v for k, v in vars(args).items() if k not in ("out",)}
    config["data"] = str(Path(args.data).resolve())
    config["mel"] = preset.mel.to_dict()
    config["unet" if args.backbone == "unet" else "dit"] = config_to_dict(
        preset.unet if args.backbone == "unet" else preset.dit
    )
    config["num_files"] = len(dataset)
    config["data_fingerprint"] = data_fingerprint(dataset.entries)
    config["classes"] = dataset.classes if args.labels else None
    if args.text_encoder:
        config["text_encoder"] = str(Path(args.text_encoder).resolve())
    return config


def main(argv: list[str] | None = None) -> Path:
    """Train (or resume); returns the run folder."""
    args = parse_args(argv)
    if train.is_family_folder(
        args.init
    ):  # a pretrained family: only the recipe of its modality fine-tunes it
        return train.finetune_family(args, modality="audio")
    run = train.check_run_folder(args.out, "train audio")  # new, empty, or a run of this recipe
    train.check_resume_early(run, args)  # a changed setting, before the data is read
    settings = train.TrainSettings.from_args(args)  # what the library reads, typed
    preset = PRESETS[args.preset]
    spec = preset.mel

    # --- processes and devices (torchrun / accelerate variables, or one process)
    dist, device, micro = train.start_processes(
        settings
    )  # torchrun/accelerate or one process; threads; micro-batch
    if device.type == "cuda":  # the recipe owns the backend flags
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes all run long: pick the fastest convolutions

    # --- data: fixed-length clips; broken files are skipped with a warning naming each one
    if args.captions:
        try:
            train.require_caption_metadata(args.data)
        except ValueError as err:
            raise ValueError(f"--captions: {err}") from None
    dataset = AudioFolder(
        args.data,
        AudioFolderConfig(
            sample_rate=spec.sample_rate,
            clip_seconds=args.seconds,
            channels=1,
            labels="metadata" if args.captions else "auto" if args.labels else "none",
            seed=args.seed,
        ),
    )
    if args.labels:
        train.require_labels(dataset, args.data)
    num_classes = len(dataset.classes) if args.labels else None
    captions: list[str] = []
    if args.captions:
        try:
            captions = train.distinct_captions(dataset.entries, args.data)  # every file has one
        except ValueError as err:
            raise ValueError(f"--captions: {err}") from None

    # --- what training uses: files used and skipped (RUN/skipped.txt), conversions applied
    train.data_summary(
        dataset,
        run,
        kind="audio",
        target=f"{args.seconds:g} s clips at {dataset.config.sample_rate} Hz, {dataset.config.channels} channel(s)",
        enabled=dist.is_main,
    )

    # --- resume? (refuse if a setting that matters changed)
    config = run_config(args, dataset)
    ckpt = train.latest_checkpoint(run)
    if ckpt is not None:
        train.check_resume(ckpt, config, settings)

    # --- mel adapter: per-bin statistics measured on (a sample of) the data, so latents have std 0.5
    vocoder = None
    if args.vocoder:
        from multidiff.modalities.vocoders import load_hifigan

        vocoder = load_hifigan(
            args.vocoder, spec=spec
        )  # the adapter refuses a vocoder for other mel settings
    adapter = MelAdapter(MelAdapterConfig(spec=spec, channels=1, sigma_data=0.5), vocoder)
    # spread over the folder: its first files may all be of one class (one subfolder)
    fit_waves = [dataset.get(i, 0)["wave"] for i in range(0, len(dataset), max(1, len(dataset) // 64))][:64]
    if ckpt is not None:
        stats = ckpt.state["extra"]["adapter"]["stats"]
        adapter.set_stats(torch.tensor(stats["mean"]), torch.tensor(stats["std"]))
    elif args.init:  # fine-tuning keeps the normalisation the weights were trained with
        train.init_adapter_stats(adapter, args.init)
    else:
        adapter.fit_stats(fit_waves)
    # The per-bin range of the latents: sampling clamps x0 predictions to it (static thresholding).
    with torch.no_grad():
        z = torch.cat([adapter.encode(w[None]) for w in fit_waves])  # (n, 1, M, T)
    x0_range = (z.amin((0, 3))[..., None], z.amax((0, 3))[..., None])  # 2 x (1, M, 1)
    adapter.to(device)

    # --- backbone and denoiser (EDM preconditioning, Karras et al. 2022) and its objective; with captions,
    # a text encoder whose tokens the U-Net cross-attends to (latent diffusion, Rombach et al. 2022, Sec. 3.3)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    try:
        text_encoder = train.caption_encoder(args.captions, args.text_encoder, args.preset)
    except ValueError as err:
        raise ValueError(f"--text-encoder: {err}") from err
    context_dim = None if text_encoder is None else int(text_encoder.dim)  # type: ignore[arg-type]
    backbone = train.make_backbone(
        args.backbone, preset.unet, preset.dit,
        num_classes=num_classes, context_dim=context_dim, fused_kernels=args.fused_kernels,
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
    pipe = AudioPipeline(
        pipe_copy,
        adapter,
        sampling=SamplingConfig(sampler=args.sampler, steps=args.sample_steps),
        labels=dataset.classes if args.labels else None,
        window=adapter.latent_shape(args.seconds)[-1],
        x0_range=x0_range,
        text_encoder=pipe_text,
    )
    # The pipeline's modules under the training module's names, for ema.copy_to.
    pipe_net = train.trained_net(pipe.denoiser, pipe.text_encoder)
    to_pipeline = train.EmaToPipeline(ema, pipe_net, net)  # EMA weights (LoRA merged) into the pipeline

    train.compile_backbone(
        backbone, settings, device
    )  # after the pipeline's copy: only training runs compiled

    # --- the data stream: position = step x global batch; every sample has its own seed
    # decoded once into memory when it fits (2 GiB), so that loading never waits on decoding or resampling
    dataset.preload(workers=max(1, args.workers), progress=dist.is_main and sys.stderr.isatty())
    layout = train.StreamLayout(len(dataset), micro, args.accum, dist.world_size, args.seed)
    train.check_data_position(ckpt, layout.position(step).to_dict(), step, args.allow_data_change)
    batches = iter(
        train.stream_loader(
            dataset,
            layout,
            rank=dist.rank,
            start_step=step,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
    )

    def prepare(batch: dict[str, Any]) -> dict[str, Any]:
        """Wave -> normalised mel latents (float32, outside autocast), padding mask, labels with dropout."""
        with torch.no_grad():
            x0 = adapter.encode(batch["wave"].to(device, non_blocking=True))  # (b, 1, M, T)
        out = {"x0": x0, "seeds": batch["sample_seed"], "cond": {}}
        out["mask"] = mel_frame_mask(batch["mask"].to(device), spec)  # (b, 1, 1, T), real audio only
        if num_classes is not None:
            labels = batch["label"].to(device)
            out["cond"]["labels"] = train.drop_labels(
                labels, batch["sample_seed"], args.label_dropout, num_classes
            )
        if text_encoder is not None:
            out["cond"]["captions"] = train.drop_captions(
                list(batch["caption"]), batch["sample_seed"], args.caption_dropout
            )
        return out

    def loss_fn(model: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        return train.diffusion_loss(
            model,
            b["x0"],
            sigma_dist,
            seeds=b["seeds"],
            weighting=weighting,
            sigma_data=0.5,
            cond=b["cond"],
            mask=b["mask"],
        )

    def write_pipeline(folder: Path) -> None:
        to_pipeline.save_pipeline(pipe, folder / "pipeline", settings)

    def preview(step: int) -> None:
        to_pipeline()
        label = list(range(args.preview_num)) if num_classes else None
        if label is not None:
            label = [k % num_classes for k in label]
        prompt = [captions[k % len(captions)] for k in range(args.preview_num)] if captions else None
        latents = pipe.sample(
            args.preview_num,
            adapter.latent_shape(args.seconds),
            label=label,
            prompt=prompt,
            seed=0,
            progress=False,
        )
        waves = adapter.decode(latents, length=pipe.num_samples(args.seconds))
        train.save_audio_previews(
            run / "previews" / f"step-{step:08d}", waves, spec.sample_rate, adapter.denormalise(latents),
            spec=spec,
        )  # fmt: skip

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

    # --- the final pipeline (EMA weights), ready for generate_audio.py
    if dist.is_main:
        to_pipeline.save_pipeline(pipe, run / "pipeline", settings)
        print(f"saved {run / 'pipeline'}", flush=True)
    train.cleanup_distributed()
    return run


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "train audio"))
