"""What the generate recipes (audio, video, image) share: their common options and the setup before sampling.

Each recipe adds its modality's options (length, known media) and writes its own files; the options every
one of them has, and loading the pipeline with its device and seed, live here once.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multidiff.train.checkpoint import resolve_pipeline_dir

__all__ = [
    "Loaded", "add_generate_options", "check_extent", "check_positive", "check_strength", "load_for_generation",
]  # fmt: skip


def add_generate_options(
    p: argparse.ArgumentParser, *, items: str, files: str, batch: int, prompt: bool
) -> None:
    """``--ckpt --out --num --steps --sampler --guidance --label [--prompt] --seed --batch --device
    --dtype --compile --threads --quiet --overwrite``.

    Args:
        p: The recipe's parser.
        items: What one output is, for the help texts ("clips", "videos", "images").
        files: The kind of file written ("wav", "video", "png").
        batch: Default of ``--batch``.
        prompt: Whether the modality takes ``--prompt`` (captioned models).
    """
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="run folder, checkpoint folder or pipeline folder")
    source.add_argument(
        "--model", help="a bundled model by name, instead of --ckpt ('multidiff models' lists them)"
    )
    p.add_argument("--out", required=True, help=f"folder for the {files} files (created)")
    p.add_argument("--num", type=int, default=4, help=f"number of {items}")
    p.add_argument("--steps", type=int, help="sampler steps")
    p.add_argument("--sampler", help="sampler name (euler, heun, dpmpp_2m, dpmpp_2m_sde, unipc, ...)")
    with_what = "--label or --prompt" if prompt else "--label"
    p.add_argument("--guidance", type=float, help=f"classifier-free guidance scale (with {with_what})")
    p.add_argument("--label", help="class name (an index only for a model without label names)")
    if prompt:
        p.add_argument("--prompt", help="caption (models trained with --captions)")
    p.add_argument("--seed", type=int, help="base seed (default: random, printed)")
    p.add_argument("--batch", type=int, default=batch, help=f"{items} generated at once")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        help="cast the network's weights: bf16 halves their memory, faster on a GPU (default: as saved)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the network with torch.compile before sampling: the first batch takes tens of seconds "
        "longer, later steps run faster (on CUDA inside the CUDA graphs the sampler replays)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite", action="store_true", help="replace files of the same name (default: new names)"
    )


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """Refuse (ValueError naming the option) any of ``names`` that is given and not > 0, before any work."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def check_strength(args: argparse.Namespace, what: str) -> None:
    """``--strength`` of ``what`` (e.g. ``"audio-to-audio"``): only with ``--init``, default 0.5, in (0, 1]."""
    if args.strength is not None and not args.init:
        raise ValueError(f"--strength applies to {what}: give the input to vary with --init")
    args.strength = 0.5 if args.strength is None else args.strength
    if not 0 < args.strength <= 1:
        raise ValueError(f"--strength must lie in (0, 1], got {args.strength}")


def check_extent(pipe: Any, args: argparse.Namespace, extent: Any) -> None:
    """Refuse, before the command prints or writes anything, media of ``extent`` whose latents for one batch
    would be empty or too large (the check :meth:`~multidiff.pipeline.Pipeline.sample` makes)."""
    from multidiff.pipeline_checks import check_latent_size

    check_latent_size(min(args.batch, args.num), pipe.adapter.latent_shape(extent))


@dataclass(frozen=True)
class Loaded:
    """A pipeline ready to sample (on its device, weights in ``--dtype``, compiled with ``--compile``), its
    folder, device, base seed."""

    pipe: Any
    folder: Path
    device: torch.device
    seed: int


def load_for_generation(args: argparse.Namespace, pipeline_class: type) -> Loaded:
    """Check the common options, set the threads, load ``pipeline_class`` from ``--ckpt`` on the device and
    draw a base seed if none was given.

    Raises:
        ValueError: For a bad count, a folder without a pipeline, or ``--prompt`` for a model without
            captions (each names the option or the folder).
    """
    check_positive(args, "threads", "steps")
    if args.num < 1 or args.batch < 1:
        raise ValueError("--num and --batch must be >= 1")
    if args.seed is not None and not 0 <= args.seed <= 2**63 - args.num:  # sample k takes seed + k
        raise ValueError(f"--seed must lie in [0, 2^63 - --num], got {args.seed}")
    if args.sampler is not None:
        from multidiff.core.samplers import get_sampler

        get_sampler(args.sampler)  # an unknown name is refused with the names there are
    from multidiff.train.distributed import parse_device

    device = parse_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    from multidiff.models import resolve_source

    args.ckpt = resolve_source(args.ckpt, args.model)  # a path, or a bundled model's folder
    folder = resolve_pipeline_dir(args.ckpt)
    pipe = pipeline_class.from_pretrained(folder, device=device)
    if args.dtype is not None:
        pipe.to(dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    if getattr(
        args, "compile", False
    ):  # in place, by the backbone's own Module.compile (UNet.compile's options)
        pipe.backbone.compile()
    if getattr(args, "prompt", None) is not None and pipe.text_encoder is None:
        raise ValueError(f"{folder} was trained without captions; --prompt needs a caption model")
    if args.label is not None:  # before anything is printed or written
        pipe.label_tensor(args.label, 1)
    from multidiff.pipeline_checks import check_guidance

    check_guidance(pipe, args.guidance, args.label, getattr(args, "prompt", None))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    return Loaded(pipe, folder, device, seed)
