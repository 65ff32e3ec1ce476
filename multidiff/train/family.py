"""Fine-tune a pretrained family from its local diffusers folder: ``--init FOLDER`` where ``FOLDER`` holds a
``model_index.json`` (:mod:`multidiff.families`).

The family's own parts are kept: its VAE encodes the user's clips into the latent cache (frozen), its text
encoder encodes their captions (frozen), and its model trains with the objective of its scheduler (DDPM's
uniform timesteps on the VP table, the ε-loss for an ε-model, the v-loss for a v-model; Ho et al. 2020,
Salimans & Ho 2022). The whole model trains, or a LoRA on its attention projections (``--lora RANK``).

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
import uuid
from pathlib import Path
from typing import Any

import torch

__all__ = ["FINETUNE", "NOT_YET", "check_family_init", "finetune_family", "is_family_folder"]

#: diffusers pipeline class -> the recipe (modality) that fine-tunes it
FINETUNE: dict[str, str] = {"AnimateDiffPipeline": "video"}

#: diffusers pipeline class -> why the recipes do not fine-tune it yet (it loads and samples all the same)
NOT_YET: dict[str, str] = {
    "AudioLDMPipeline": "its diffusers folder holds no mel front end (the STFT settings its VAE was trained "
    "on), so the user's audio cannot be encoded into its latents",
    "AudioLDM2Pipeline": "AudioLDM 2 does not load (see multidiff.families.audioldm)",
    "StableAudioPipeline": "its timing conditioning (seconds_start, seconds_total) and T5 prompts are not fed "
    "by the audio recipe yet",
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
            f"--init: {name} is a {FINETUNE[name]} model: fine-tune it with multidiff train {FINETUNE[name]}"
        )
    for option, given in (("--vae", "vae"), ("--labels", "labels"), ("--text-encoder", "text_encoder"),
                          ("--images", "images"), ("--shard", "shard")):  # fmt: skip
        if getattr(args, given, None):
            raise ValueError(f"{option} does not apply with --init {name}: the family's own parts are used")
    if not getattr(args, "captions", False):
        raise ValueError(
            f"--init {name}: the model is prompted with text; give --captions (a caption per clip in "
            "DATA/metadata.csv)"
        )
    return name


def save_family_folder(base: Path, backbone_unet: Any, dst: Path) -> Path:
    """Write ``base`` (an AnimateDiff diffusers folder) to ``dst`` with ``backbone_unet`` (a
    ``UNetMotionModel``) as its ``unet`` (the motion adapter merged into it), atomically: the folder is
    written beside ``dst`` under a hidden name and renamed into place (a previous ``dst``, the same run's
    earlier output, is replaced only once the new folder is complete)."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("unet", "motion_adapter"))
        backbone_unet.save_pretrained(str(tmp / "unet"))
        index = json.loads((tmp / "model_index.json").read_text(encoding="utf-8"))
        index["unet"] = ["diffusers", type(backbone_unet).__name__]
        index.pop("motion_adapter", None)  # merged into the unet
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.old")
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def finetune_family(args: Any, *, modality: str) -> Path:
    """Fine-tune the family folder ``args.init`` on ``args.data`` (the video recipe's options); returns the
    run folder. See the module docstring."""
    from multidiff import train
    from multidiff.core.losses import default_objective
    from multidiff.data.common import data_fingerprint
    from multidiff.data.video import VideoFolder, VideoFolderConfig
    from multidiff.families import load_family
    from multidiff.families.animatediff import encode_clip_text
    from multidiff.lora import apply_lora
    from multidiff.nn.text import NULL_CAPTION

    name = check_family_init(args, modality)
    settings = train.TrainSettings.from_args(args)
    dist, device, micro = train.start_processes(settings)
    run, base = Path(args.out), Path(args.init).resolve()
    pipe = load_family(base)
    size = args.size if args.size_given else pipe.size
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))

    # --- data: every clip encoded once by the family's VAE (frozen); captions from metadata.csv
    train.require_caption_metadata(args.data)
    adapter = pipe.adapter.requires_grad_(False).to(device)
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
        adapter=adapter,
        cache_dir=run / "latent-cache",
    )
    train.distinct_captions(dataset.entries, args.data)  # every clip has a caption, or the file is named
    target = f"{args.frames} frames of {size[0]}x{size[1]} px through {name}'s VAE"
    train.data_summary(dataset, run, kind="video", target=target, enabled=dist.is_main)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config.update(init=str(base), family=name, data=str(Path(args.data).resolve()), size=list(size),
                  num_files=len(dataset), data_fingerprint=data_fingerprint(dataset.entries))  # fmt: skip
    ckpt = train.latest_checkpoint(run)
    if ckpt is not None:
        train.check_resume(ckpt, config, settings)
    train.cache_latents([dataset], is_main=dist.is_main)

    # --- the model trains with its scheduler's objective; the text encoder stays frozen
    text_model = pipe.text_model.requires_grad_(False).to(device)
    denoiser = pipe.denoiser.to(device).train().requires_grad_(True)
    sigma_dist, weighting = default_objective(denoiser.schedule)
    if denoiser.prediction == "v":
        weighting = "v"
    pipe.denoiser = copy.deepcopy(denoiser).eval().requires_grad_(False)  # what previews and saving use
    model = apply_lora(denoiser, args.lora, args.lora_alpha, args.lora_targets) if args.lora else denoiser
    training = train.start_training(model, settings, ckpt, dist)
    to_pipeline = train.EmaToPipeline(training.ema, pipe.denoiser, model)
    train.compile_backbone(denoiser.backbone, settings, device)
    step = training.step

    layout = train.StreamLayout(len(dataset), micro, args.accum, dist.world_size, args.seed)
    batches = iter(
        train.stream_loader(
            dataset,
            layout,
            rank=dist.rank,
            start_step=step,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
    )

    def prepare(batch: dict[str, Any]) -> dict[str, Any]:
        captions = train.drop_captions(list(batch["caption"]), batch["sample_seed"], args.caption_dropout)
        captions = ["" if c == NULL_CAPTION else c for c in captions]  # the family's unconditional prompt
        context = encode_clip_text(pipe.tokenizer, text_model, captions)  # (b, L, D)
        x0 = batch["latents"].to(device, non_blocking=True)  # (b, C, F, h, w)
        return {"x0": x0, "seeds": batch["sample_seed"], "cond": {"context": context}}

    def loss_fn(m: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        return train.diffusion_loss(m, b["x0"], sigma_dist, seeds=b["seeds"], weighting=weighting,
                                    cond=b["cond"])  # fmt: skip

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
            out = save_family_folder(base, pipe.denoiser.backbone.unet, run / "pipeline")
            print(f"saved {out} (a {name} diffusers folder: multidiff.families.load_family)", flush=True)
    train.cleanup_distributed()
    return run
