"""Fine-tune a pretrained family from its local diffusers folder: ``--init FOLDER`` where ``FOLDER`` holds a
``model_index.json`` (:mod:`multidiff.families`).

The family's own parts are kept: its autoencoder encodes the user's media (frozen; video clips once, into the
latent cache), its text encoder their captions (frozen), and its model trains with the objective of its
scheduler: AnimateDiff's DDPM uniform timesteps on the VP table with the ε- or v-loss (Ho et al. 2020,
Salimans & Ho 2022); Stable Audio's cosine time t ~ U, σ = tan(πt/2) in its σ range, with the v-loss
(:class:`~multidiff.core.losses.CosineTime`), conditioned on seconds_start = 0 and seconds_total = the clip's
length, the clip zero-padded to the model's fixed length. The whole model trains, or a LoRA on its attention
projections (``--lora RANK``).

What a run writes: ``RUN/pipeline/``, the fine-tuned model as a diffusers folder of the same family (the base
folder's other components copied, the trained model's weights replaced, EMA weights), loadable with
:func:`multidiff.families.load_family` (the generate commands do not take family folders yet); with ``--lora`` only
``RUN/lora/`` (the adapter and the base folder it belongs to; :func:`multidiff.lora.load_lora` puts it on
``load_family(base)``). Checkpoints and resuming work as in every recipe.

Families that can be fine-tuned, and why the others cannot yet, are in :data:`FINETUNE` and
:data:`NOT_YET`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["FINETUNE", "NOT_YET", "check_family_init", "finetune_family", "is_family_folder"]

#: diffusers pipeline class -> the recipe (modality) that fine-tunes it
FINETUNE: dict[str, str] = {"AnimateDiffPipeline": "video", "StableAudioPipeline": "audio"}

#: diffusers pipeline class -> why the recipes do not fine-tune it yet (it loads and samples all the same)
NOT_YET: dict[str, str] = {
    "AudioLDMPipeline": "its diffusers folder holds no mel front end (the STFT settings its VAE was trained "
    "on), so the user's audio cannot be encoded into its latents",
    "AudioLDM2Pipeline": "AudioLDM 2 does not load (see multidiff.families.audioldm)",
    "StableVideoDiffusionPipeline": "it is conditioned on a first frame (CLIP image embedding, added time ids, "
    "noise-augmented latents), which the video recipe does not produce yet",
    "LTXPipeline": "its video VAE compresses time, which the latent cache (per-frame VAEs) does not handle yet",
}


def is_family_folder(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is a diffusers pipeline folder (it holds ``model_index.json``)."""
    return path is not None and (Path(path) / "model_index.json").is_file()


def check_family_init(args: Any, modality: str) -> str:
    """The family of ``args.init`` when this recipe (``modality``) can fine-tune it with ``args``' settings.

    Raises:
        ValueError: The family is not supported here (the reason is named), belongs to another recipe, or an
            option cannot apply to it (the option is named).
    """
    from multidiff.families import family_of

    name = family_of(args.init)
    if name in NOT_YET:
        raise ValueError(
            f"--init: {args.init} is a {name} folder; fine-tuning it is not supported yet: {NOT_YET[name]}"
        )
    if FINETUNE.get(name) != modality:
        raise ValueError(
            f"--init: {name} makes {FINETUNE[name]}: fine-tune it with multidiff train {FINETUNE[name]}"
        )
    for option, given in (("--vae", "vae"), ("--labels", "labels"), ("--text-encoder", "text_encoder"),
                          ("--images", "images"), ("--shard", "shard")):  # fmt: skip
        if getattr(args, given, None):
            raise ValueError(f"{option} does not apply with --init {name}: the family's own parts are used")
    if name == "StableAudioPipeline":  # from the configs, before any weights load
        longest = _stable_audio_seconds(Path(args.init))
        if args.seconds > longest + 1e-9:
            raise ValueError(
                f"--seconds {args.seconds:g}: this Stable Audio model makes at most {longest:g} s"
            )
    if not getattr(args, "captions", False):
        raise ValueError(
            f"--init {name}: the model is prompted with text; give --captions (a caption per clip in "
            "DATA/metadata.csv)"
        )
    return name


def _stable_audio_seconds(folder: Path) -> float:
    """The longest clip of a Stable Audio folder, from its configs: the DiT's ``sample_size`` latent frames
    times the autoencoder's hop, over its sampling rate."""
    import math

    try:
        dit = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        return dit["sample_size"] * math.prod(vae["downsampling_ratios"]) / vae["sampling_rate"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"--init: {folder}: the transformer or vae config is unreadable ({err})") from None


def save_family_folder(base: Path, components: dict[str, Any], dst: Path, drop: tuple[str, ...] = ()) -> Path:
    """Write the diffusers folder ``base`` to ``dst`` with ``components`` (name -> diffusers model) saved in
    place of its own and the components ``drop`` left out (e.g. a motion adapter merged into the U-Net),
    atomically: the folder is written beside ``dst`` under a hidden name and renamed into place (a previous
    ``dst``, the same run's earlier output, is replaced only once the new folder is complete)."""
    from multidiff.atomic import replacing

    with replacing(dst) as tmp:
        shutil.copytree(base, tmp, ignore=shutil.ignore_patterns(*components, *drop))
        index = json.loads((tmp / "model_index.json").read_text(encoding="utf-8"))
        for name, model in components.items():
            model.save_pretrained(str(tmp / name))
            index[name] = ["diffusers", type(model).__name__]
        for name in drop:
            index.pop(name, None)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return dst


class _Parts(NamedTuple):
    """What differs between families: the data, a batch -> (latents, conditioning), the objective and the
    trained components as the diffusers folder names them."""

    dataset: Any
    prepare: Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, Any]]]
    sigma_dist: Any
    weighting: str
    components: Callable[[Any], dict[str, Any]]
    drop: tuple[str, ...]
    summary: str


def _animatediff_parts(args: Any, pipe: Any, run: Path, device: torch.device) -> _Parts:
    from multidiff.core.losses import default_objective
    from multidiff.data.video import VideoFolder, VideoFolderConfig
    from multidiff.families.animatediff import encode_clip_text

    size = args.size if args.size_given else pipe.size
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    dataset = VideoFolder(
        args.data,
        VideoFolderConfig(
            frames=args.frames,
            fps=args.fps,
            stride=args.stride,
            size=size,
            labels="metadata",
            seed=args.seed,
            return_frames=False,
        ),  # fmt: skip
        adapter=pipe.adapter,
        cache_dir=run / "latent-cache",
    )

    def prepare(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        context = encode_clip_text(pipe.tokenizer, pipe.text_model, batch["caption"])  # (b, L, D)
        return batch["latents"].to(device, non_blocking=True), {"context": context}  # (b, C, F, h, w)

    sigma_dist, weighting = default_objective(pipe.denoiser.schedule)  # DDPM: uniform t, the ε-loss
    return _Parts(
        dataset, prepare, sigma_dist, "v" if pipe.denoiser.prediction == "v" else weighting,
        lambda p: {"unet": p.denoiser.backbone.unet}, ("motion_adapter",),
        f"{args.frames} frames of {size[0]}x{size[1]} px",
    )  # fmt: skip


def _stable_audio_parts(args: Any, pipe: Any, run: Path, device: torch.device) -> _Parts:
    from multidiff.core.losses import CosineTime
    from multidiff.data.audio import AudioFolder, AudioFolderConfig

    adapter = pipe.adapter  # --seconds was checked against the model's length by check_family_init
    dataset = AudioFolder(
        args.data,
        AudioFolderConfig(
            sample_rate=adapter.sample_rate,
            clip_seconds=args.seconds,
            channels=adapter.channels,
            labels="metadata",
            seed=args.seed,
        ),  # fmt: skip
    )
    full = adapter.latent_length * adapter.hop  # the model's fixed length in samples

    def prepare(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        wave = batch["wave"].to(device, non_blocking=True)  # (b, C, N)
        x0 = adapter.encode(F.pad(wave, (0, full - wave.shape[-1])))  # (b, D, sample_size), silence after
        context, mask = pipe.text_encoder.encode(batch["caption"])  # the null caption: all-False mask
        b = wave.shape[0]
        seconds = {"seconds_start": torch.zeros(b, device=device),
                   "seconds_total": torch.full((b,), float(args.seconds), device=device)}  # fmt: skip
        return x0, {"context": context, "context_mask": mask, **seconds}

    sched = pipe.denoiser.schedule
    return _Parts(
        dataset, prepare, CosineTime(sched.sigma_min, sched.sigma_max), "v",
        lambda p: {"transformer": p.denoiser.backbone.transformer,
                   "projection_model": p.denoiser.backbone.projection},
        (), f"{args.seconds:g} s at {adapter.sample_rate} Hz, {adapter.channels} channel(s)",
    )  # fmt: skip


_PARTS = {"AnimateDiffPipeline": _animatediff_parts, "StableAudioPipeline": _stable_audio_parts}


def finetune_family(args: Any, *, modality: str) -> Path:
    """Fine-tune the family folder ``args.init`` on ``args.data`` (the recipe's options); returns the run
    folder. See the module docstring."""
    from multidiff import train
    from multidiff.data.common import data_fingerprint
    from multidiff.families import load_family
    from multidiff.lora import apply_lora

    name = check_family_init(args, modality)
    settings = train.TrainSettings.from_args(args)
    dist, device, micro = train.start_processes(settings)
    run, base = train.check_run_folder(args.out, f"train {modality}"), Path(args.init).resolve()
    train.require_caption_metadata(args.data)
    pipe = load_family(base)
    pipe.adapter.requires_grad_(False).to(device)  # frozen: the autoencoder and the text encoder
    text = pipe.text_model if hasattr(pipe, "text_model") else pipe.text_encoder
    text.requires_grad_(False).to(device)
    parts = _PARTS[name](args, pipe, run, device)
    dataset = parts.dataset

    # --- data: every file with a caption (metadata.csv), what training uses said before it starts
    train.distinct_captions(dataset.entries, args.data)
    train.data_summary(dataset, run, kind=modality, target=f"{parts.summary} through {name}'s autoencoder",
                       enabled=dist.is_main)  # fmt: skip
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config.update(init=str(base), family=name, data=str(Path(args.data).resolve()), num_files=len(dataset),
                  data_fingerprint=data_fingerprint(dataset.entries))  # fmt: skip
    ckpt = train.latest_checkpoint(run)
    if ckpt is not None:
        train.check_resume(ckpt, config, settings)
    if getattr(dataset, "cache_dir", None) is not None:
        train.cache_latents([dataset], is_main=dist.is_main, workers=args.workers)

    # --- the model trains with its family's objective; the pipeline keeps its own copy for the EMA weights
    denoiser = pipe.denoiser.to(device).train().requires_grad_(True)
    pipe.denoiser = copy.deepcopy(denoiser).eval().requires_grad_(False)
    model = apply_lora(denoiser, args.lora, args.lora_alpha, args.lora_targets) if args.lora else denoiser
    training = train.start_training(model, settings, ckpt, dist)
    to_pipeline = train.EmaToPipeline(training.ema, pipe.denoiser, model)
    train.compile_backbone(denoiser.backbone, settings, device)
    step = training.step

    layout = train.StreamLayout(len(dataset), micro, args.accum, dist.world_size, args.seed)
    train.check_data_position(ckpt, layout.position(step).to_dict(), step, args.allow_data_change)
    pin = device.type == "cuda"
    loader = train.stream_loader(dataset, layout, rank=dist.rank, start_step=step, num_workers=args.workers,
                                 pin_memory=pin)  # fmt: skip
    batches = iter(loader)

    def prepare(batch: dict[str, Any]) -> dict[str, Any]:
        captions = train.drop_captions(list(batch["caption"]), batch["sample_seed"], args.caption_dropout)
        with torch.no_grad():
            x0, cond = parts.prepare({**batch, "caption": captions})  # the null caption "": unconditional
        return {"x0": x0, "seeds": batch["sample_seed"], "cond": cond}

    def loss_fn(m: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        return train.diffusion_loss(m, b["x0"], parts.sigma_dist, seeds=b["seeds"], weighting=parts.weighting,
                                    sigma_data=denoiser.sigma_data, cond=b["cond"])  # fmt: skip

    with train.Session(
        run, settings, training, dist=dist, device=device, config=config,
        extra_state=lambda: {"guard": training.guard.state_dict()}, extra_files=lambda folder: None,
    ) as session:  # fmt: skip
        while step < args.steps:
            step = session.step(step, [prepare(next(batches)) for _ in range(args.accum)], loss_fn)
            if not session.end_step(step, layout.position(step).to_dict()):
                break

    if dist.is_main:
        to_pipeline()  # the EMA weights (a LoRA merged) into pipe.denoiser
        if args.lora:
            to_pipeline.save_lora(run, settings)
            print(
                f"saved {run / 'lora'} (a LoRA of {base}: multidiff.lora.load_lora(load_family(base), ...))"
            )
        else:
            out = save_family_folder(base, parts.components(pipe), run / "pipeline", parts.drop)
            print(f"saved {out} (a {name} diffusers folder: multidiff.families.load_family)", flush=True)
    train.cleanup_distributed()
    return run
