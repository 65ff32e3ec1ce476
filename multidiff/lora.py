"""Low-rank adaptation (LoRA, Hu et al. 2021) of a multidiff denoiser through peft (an optional extra).

Training (``--lora RANK`` in the train recipes, with ``--init`` for the base): the attention projections of
either backbone (optionally the MLPs too) get rank-r updates ``W + (alpha/r)·B·A``; every other weight is frozen.
The run's pipeline folder holds the merged weights (so it generates like any pipeline) and, in ``lora/``, the
small adapter itself (``adapter.safetensors`` + ``adapter.json``: rank, alpha, targets and the base model's
folder), which :func:`load_lora` puts on top of that base again, merged or not.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "LORA_TARGETS",
    "add_lora_options",
    "apply_lora",
    "has_lora",
    "load_lora",
    "merged_state_dict",
    "save_lora",
]

#: Which linear layers get a LoRA update: names of the attention projections of the U-Net and the DiT
#: (self-, cross- and temporal attention), optionally the MLPs.
# multidiff's attention (attn, cross: to_qkv / to_q, to_kv, proj) and diffusers' (attn1, attn2: to_q, to_k,
# to_v, to_out.0; feed-forward ff.net.0.proj, ff.net.2), so a LoRA also fits a pretrained family's model
LORA_TARGETS = {
    "attention": r".*\.(attn|cross|attn1|attn2)\.(to_qkv|to_q|to_kv|to_k|to_v|proj|to_out\.0)",
    "attention+mlp": r".*\.((attn|cross|attn1|attn2)\.(to_qkv|to_q|to_kv|to_k|to_v|proj|to_out\.0)"
    r"|mlp\.(fc1|fc2)|ff\.net\.(0\.proj|2))",
}
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter.safetensors", "adapter.json"


def add_lora_options(p: argparse.ArgumentParser) -> None:
    """``--lora RANK``, ``--lora-alpha``, ``--lora-targets``."""
    p.add_argument(
        "--lora", type=int, help="train a LoRA of this rank instead of every weight (use with --init)"
    )
    p.add_argument("--lora-alpha", type=float, help="LoRA scale numerator alpha (default: the rank)")
    p.add_argument(
        "--lora-targets", default="attention", choices=sorted(LORA_TARGETS), help="layers that get a LoRA"
    )


def _config(rank: int, alpha: float | None, targets: str) -> Any:
    from peft import LoraConfig

    if isinstance(rank, bool) or rank < 1:
        raise ValueError(f"--lora must be a positive rank, got {rank}")
    if targets not in LORA_TARGETS:
        raise ValueError(f"--lora-targets must be one of {sorted(LORA_TARGETS)}, got {targets!r}")
    return LoraConfig(
        r=int(rank), lora_alpha=float(alpha or rank), target_modules=LORA_TARGETS[targets], lora_dropout=0.0
    )


def apply_lora(
    denoiser: nn.Module, rank: int, alpha: float | None = None, targets: str = "attention"
) -> nn.Module:
    """The denoiser wrapped by peft with LoRA layers on ``targets``; only they train (LoRA's B starts at zero,
    so the wrapped model computes exactly what ``denoiser`` did)."""
    try:
        from peft import get_peft_model
    except ImportError:
        raise ValueError("--lora needs peft: pip install 'multidiff[lora]'") from None
    model = get_peft_model(denoiser, _config(rank, alpha, targets))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"--lora-targets {targets}: the backbone has no such layers")
    return model


def has_lora(module: nn.Module) -> bool:
    """Whether any submodule is a peft LoRA layer."""
    return any(hasattr(m, "lora_A") for m in module.modules())


_PEFT_PREFIX = re.compile(r"(^|\.)base_model\.model\.")


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict ``module`` would have without its LoRA layers, with every update merged into its base
    weight (``W + scale·B·A``): the keys of the plain model. ``module`` itself is not changed."""
    merged = copy.deepcopy(module)
    for m in merged.modules():
        if hasattr(m, "lora_A") and hasattr(m, "merge"):
            m.merge()
    out = {}
    for key, value in merged.state_dict().items():
        if "lora_" in key:
            continue
        key = _PEFT_PREFIX.sub(r"\1", key).replace(".base_layer.", ".")
        out[key] = value
    return out


def save_lora(module: nn.Module, folder: str | Path, *, base: str | None, rank: int, alpha: float | None,
              targets: str) -> Path:  # fmt: skip
    """Write the LoRA weights of ``module`` (only they) and what they belong to into ``folder``."""
    from multidiff.serialize import save_tensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {_PEFT_PREFIX.sub(r"\1", k): v for k, v in module.state_dict().items() if "lora_" in k}
    save_tensors(folder / ADAPTER_WEIGHTS, state)
    meta = {"rank": rank, "alpha": alpha or rank, "targets": targets, "base": base}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def load_lora(pipe: Any, folder: str | Path, *, merge: bool = True) -> Any:
    """Put the LoRA saved in ``folder`` on top of ``pipe``'s denoiser (its base model): merged into the base
    weights (default; the pipeline then generates at full speed and saves as a plain pipeline), or kept as
    separate layers (``merge=False``). Returns ``pipe``.

    Raises:
        ValueError: If the folder holds no LoRA, or its weights do not fit this denoiser.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() and (folder / "lora" / ADAPTER_CONFIG).is_file():
        folder = folder / "lora"
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{folder} holds no LoRA ({ADAPTER_CONFIG} is missing)")
    meta = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    model = apply_lora(
        copy.deepcopy(pipe.denoiser), int(meta["rank"]), float(meta["alpha"]), str(meta["targets"])
    )
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    own = {_PEFT_PREFIX.sub(r"\1", k): k for k in model.state_dict() if "lora_" in k}
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state))[:3], sorted(set(state) - set(own))[:3]
        raise ValueError(
            f"{folder}: the LoRA does not fit this model (missing {missing}, unexpected {extra})"
        )
    model.load_state_dict({own[k]: v for k, v in state.items()}, strict=False)
    if merge:
        pipe.denoiser.load_state_dict(merged_state_dict(model))
    else:  # sampling works; saving the pipeline needs the merged form
        pipe.denoiser = model
    return pipe
