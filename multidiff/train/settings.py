"""Settings checked before any work starts: counts, rates and probabilities in range, the seed, device,
sampler, objective, ``--init``/``--lora`` and ``--fp8`` settings, and the size of one batch of media (each
refusal a ValueError naming the option, which the command prints as one line and exit 2)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

__all__ = ["MAX_BATCH_BYTES", "check_batch_bytes", "check_settings"]

#: The most one training batch of media may take as float32: more is a typo (``--size 100000``), not a model.
MAX_BATCH_BYTES = 64 * 2**30


def _memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_batch_bytes(batch: int, per_item: int, options: str, value_bytes: int = 4) -> None:
    """Refuse a batch of ``batch`` items of ``per_item`` values of ``value_bytes`` (float32 audio: 4; uint8
    pixels: 1) over :data:`MAX_BATCH_BYTES` or half this machine's memory (the data loader holds a batch on
    the host whatever the device), naming ``options`` (e.g. ``"--size 100000"``), before any data is read."""
    need = batch * per_item * value_bytes
    memory = _memory_bytes()
    limit = MAX_BATCH_BYTES if memory is None else min(MAX_BATCH_BYTES, memory // 2)
    if need > limit:
        raise ValueError(
            f"{options}: a batch of {batch} needs {need / 2**30:,.1f} GiB before the model sees it "
            f"(the limit is {limit / 2**30:.1f} GiB, half this machine's memory at most); ask for less, or a "
            "smaller --batch"
        )


# option -> (lowest allowed value, whether the lowest value itself is allowed)
_AT_LEAST: dict[str, tuple[float, bool]] = {
    "steps": (1, True), "batch": (1, True), "accum": (1, True), "ckpt_every": (1, True), "keep": (1, True),
    "log_every": (1, True), "sample_steps": (1, True), "preview_num": (1, True), "threads": (1, True),
    "workers": (0, True), "warmup": (0, True), "preview_every": (0, True), "grad_clip": (0, True),
    "max_nonfinite": (1, True), "frames": (1, True), "size": (1, True), "lr": (0, False),
    "seconds": (0, False), "max_minutes": (0, False),
}  # fmt: skip


def check_settings(args: argparse.Namespace) -> None:
    """Refuse nonsense settings with a ValueError naming the option and the allowed range (the CLI prints
    it as one line and exits 2): counts that must be positive, rates and times that must be, probabilities
    and decays in [0, 1)."""
    for name, (low, inclusive) in _AT_LEAST.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
        if not ok:
            bound = f">= {low}" if inclusive else f"> {low}"
            raise ValueError(f"--{name.replace('_', '-')} must be {bound}, got {value}")
    for name in ("ema_decay", "label_dropout", "caption_dropout"):
        value = getattr(args, name, None)
        if value is not None and not 0 <= value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must lie in [0, 1), got {value}")
    _check_run_settings(args)
    from multidiff.train.monitor import parse_report_to

    parse_report_to(getattr(args, "report_to", None), installed=True)  # a tracker unknown or not installed
    _check_fp8(args)
    batch, accum = getattr(args, "batch", None), getattr(args, "accum", None)
    if batch is not None and accum is not None and batch % accum:
        raise ValueError(f"--batch {batch} must be a multiple of --accum {accum}")


def _check_run_settings(args: argparse.Namespace) -> None:
    """The seed, device, sampler, objective, ``--init`` and ``--lora`` settings, before the data is read."""
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed < 2**63:
        raise ValueError(f"--seed must lie in [0, 2^63), got {seed}")
    if getattr(args, "device", None) is not None:
        from multidiff.train.distributed import parse_device

        parse_device(args.device)
    if getattr(args, "sampler", None) is not None:
        from multidiff.core.samplers import get_sampler

        try:
            get_sampler(args.sampler)
        except (KeyError, ValueError) as err:
            raise ValueError(f"--sampler: {err.args[0] if err.args else err}") from None
    p_mean = getattr(args, "p_mean", None)
    if p_mean is not None and not math.isfinite(p_mean):
        raise ValueError(f"--p-mean must be a finite number, got {p_mean}")
    init, lora, alpha = getattr(args, "init", None), getattr(args, "lora", None), getattr(args, "lora_alpha", None)
    resuming = getattr(args, "out", None) is not None and (Path(args.out) / "latest").exists()
    if init is not None and not resuming:
        if not Path(init).exists():
            raise FileNotFoundError(f"--init: {init} does not exist (a multidiff run, checkpoint or pipeline folder)")
        from multidiff.train.finetune import check_init_conditioning

        check_init_conditioning(args)
    if lora is not None:
        if lora < 1:
            raise ValueError(f"--lora must be a rank >= 1, got {lora} (leave --lora out to train every weight)")
        if init is None:
            raise ValueError(
                "--lora trains low-rank updates on top of a trained model: give that model with --init "
                "(a LoRA on random weights learns nothing)"
            )
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"--lora-alpha must be a positive number, got {alpha}")
    encoder = getattr(args, "text_encoder", None)
    if encoder is not None:  # read at model time, after the data: its folder is checked here
        if not getattr(args, "captions", False):
            raise ValueError("--text-encoder needs --captions")
        if not (Path(encoder) / "config.json").is_file():
            raise ValueError(
                f"--text-encoder: {encoder} is not a transformers model folder (no config.json); give a local "
                "CLIP or T5 folder, or leave it out for the trained byte encoder"
            )


def _check_fp8(args: argparse.Namespace) -> None:
    """``--fp8``: the DiT backbone only, not with LoRA or sharding, on hardware that has float8."""
    recipe = getattr(args, "fp8", None)
    if recipe is None:
        return
    if getattr(args, "backbone", None) != "dit":
        raise ValueError(
            "--fp8 applies to the DiT backbone (--backbone dit); the U-Nets' work is convolutions"
        )
    if getattr(args, "lora", None) or getattr(args, "shard", False):
        raise ValueError("--fp8 cannot be combined with --lora or --shard yet; drop one of them")
    from multidiff.train.fp8 import fp8_unavailable

    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    reason = fp8_unavailable(device)
    if reason is not None:
        raise ValueError(f"--fp8 {reason}; drop --fp8 to train in bf16")
