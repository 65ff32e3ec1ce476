"""Fine-tuning: start a run from the weights of a trained model (``--init``) instead of random ones.

The model given is a multidiff run folder, one of its checkpoints, or a pipeline folder, trained with the same
preset and backbone (its weights must fill the new denoiser exactly: every key and shape, or the mismatch is
named). Its adapter statistics are taken over too, so the latents keep the normalisation the weights were
trained on; the adapter's other settings (mel definition, VAE, channels) must be the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidiff.nn.io import load_matching_state
from multidiff.serialize import CONFIG_NAME, WEIGHTS_NAME
from multidiff.train.checkpoint import resolve_pipeline_dir

__all__ = ["add_init_option", "check_init_conditioning", "finetune", "init_adapter_stats", "init_weights"]


def add_init_option(p: argparse.ArgumentParser) -> None:
    """``--init PATH``."""
    p.add_argument(
        "--init",
        help="fine-tune: start from this model's weights (a multidiff run, checkpoint or pipeline folder of "
        "the same preset and backbone, or a diffusers folder of a supported family: AnimateDiff for train "
        "video, Stable Audio for train audio) instead of random ones; ignored when the run resumes",
    )


def _init_config(init: str) -> tuple[Path, dict[str, Any]]:
    if (Path(init) / "model_index.json").is_file():  # say what it is rather than "holds no pipeline"
        raise ValueError(
            f"--init: {init} is a diffusers pipeline folder: the train recipe of its modality fine-tunes it "
            "(multidiff.train.family), or load it with multidiff.families.load_family"
        )
    folder = resolve_pipeline_dir(init)
    try:
        return folder, json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"--init: {folder / CONFIG_NAME} is unreadable ({err})") from None


def check_init_conditioning(args: argparse.Namespace) -> None:
    """Before the data is read: a multidiff ``--init`` model trained with class labels or captions needs
    ``--labels`` / ``--captions`` here too, and one trained without them cannot take them (its weights have
    no place for them). A diffusers family folder is the family fine-tuning's to check.

    Raises:
        ValueError: Naming the option to add or drop and what the model was trained with.
    """
    if (Path(args.init) / "model_index.json").is_file():
        return
    folder, config = _init_config(args.init)
    backbone = config.get("backbone")
    if not isinstance(backbone, dict):
        raise ValueError(
            f"--init: {folder / CONFIG_NAME} is not a multidiff pipeline's config (no backbone settings); give a "
            "multidiff run, checkpoint or pipeline folder"
        )
    if not isinstance(backbone.get("config"), dict):  # a backbone described otherwise: its weights are checked
        return
    classes = backbone["config"].get("num_classes")
    names = ", ".join(config.get("labels") or []) or "unnamed"
    trained = {
        "labels": (classes is not None, f" ({classes} classes: {names})"),
        "captions": (config.get("text_encoder") is not None, ""),
    }
    for option, (theirs, detail) in trained.items():
        if not hasattr(args, option):  # a recipe without the option
            continue
        ours = bool(getattr(args, option))
        if theirs and not ours:
            raise ValueError(f"--init: {folder} was trained with --{option}{detail}; add --{option} to fine-tune it")
        if ours and not theirs:
            raise ValueError(
                f"--init: {folder} was trained without --{option}; drop --{option}, or train from scratch "
                "without --init"
            )


def _without_stats(d: Any) -> Any:
    if isinstance(d, dict):
        # the statistics are what is taken over; a VAE is compared by its weights' digest, not its folder
        return {
            k: _without_stats(v)
            for k, v in d.items()
            if k not in ("stats", "vae_path", "chunk_size", "vocoder")
        }
    return d


def init_adapter_stats(adapter: nn.Module, init: str) -> None:
    """Give ``adapter`` (mel, image or video) the fitted statistics of the ``--init`` model's adapter.

    Raises:
        ValueError: If the two adapters differ in anything but their statistics (the settings are named).
    """
    folder, config = _init_config(init)
    theirs = config.get("adapter") or {}
    ours = adapter.to_dict()  # type: ignore[operator]
    if _without_stats(theirs) != _without_stats(ours):
        raise ValueError(
            f"--init: {folder} was trained with other adapter settings ({_without_stats(theirs)}) than this run "
            f"({_without_stats(ours)}); fine-tune with the same mel settings, VAE and channels"
        )
    stats, target = theirs.get("stats"), adapter
    if stats is None and isinstance(theirs.get("image"), dict):  # a video adapter wraps its image adapter
        stats, target = theirs["image"].get("stats"), adapter.image  # type: ignore[assignment]
    if stats is not None:
        target.set_stats(torch.tensor(stats["mean"]), torch.tensor(stats["std"]))  # type: ignore[operator]


def init_weights(denoiser: nn.Module, init: str) -> Path:
    """Load the ``--init`` model's denoiser weights into ``denoiser``; returns the pipeline folder read.

    Raises:
        ValueError: If the weights do not fill the denoiser exactly (missing, unexpected or reshaped keys are
            named: another preset or backbone).
    """
    folder, _ = _init_config(init)
    try:
        state = load_matching_state(folder / WEIGHTS_NAME, denoiser.state_dict(), "denoiser")
    except ValueError as err:
        raise ValueError(
            f"--init: {err} (fine-tune with the preset and backbone it was trained with)"
        ) from None
    denoiser.load_state_dict(state, strict=True)
    return folder


def finetune(denoiser: nn.Module, args: Any, resuming: bool) -> tuple[nn.Module, nn.Module]:
    """``(the module to train, the plain denoiser the pipeline copies)`` after ``--init`` and ``--lora``.

    A new run with ``--init`` starts from that model's weights (a resumed one from its checkpoint); with
    ``--lora RANK`` a copy of the denoiser is wrapped with LoRA layers (:func:`multidiff.lora.apply_lora`) and
    only they train, while the pipeline keeps a plain denoiser for the merged weights.
    """
    from multidiff.lora import apply_lora

    if args.init and not resuming:
        init_weights(denoiser, args.init)
    if not args.lora:
        return denoiser, denoiser
    import copy

    return apply_lora(copy.deepcopy(denoiser), args.lora, args.lora_alpha, args.lora_targets), denoiser
