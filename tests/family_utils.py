"""What the pretrained-family tests share: tiny models and folders built in code, diffusers' reference
pipelines, and the comparisons (nothing is downloaded)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a - b‖ / ‖b‖`` in float32."""
    return float((a.float() - b.float()).norm() / b.float().norm())


def word_tokenizer(specials: Sequence[str], words: Sequence[str], model_max_length: int):
    """A word-level fast tokenizer built in code: ids ``specials`` first (they must be ``<pad>``, ``<unk>``
    and ``</s>`` in the order the model's config expects), then ``words``."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def randomize_(*modules: torch.nn.Module, scale: float = 0.05) -> None:
    """Add ``scale`` times Gaussian noise to every parameter, so zero-initialised layers matter too."""
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.add_(torch.randn_like(p) * scale)


def edited_copy(folder: Path, out: Path, edits: Mapping[str, Mapping[str, Any]]) -> Path:
    """A copy of the diffusers folder ``folder`` at ``out``, with the keys of each JSON file
    (``{"scheduler/scheduler_config.json": {"clip_sample": True}, ...}``) set as given."""
    shutil.copytree(folder, out)
    for name, changes in edits.items():
        path = out / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return out


def reference(cls: Any, folder: Path, **kwargs: Any) -> Any:
    """diffusers' own pipeline ``cls`` loaded from ``folder``, its progress bar off."""
    pipe = cls.from_pretrained(str(folder), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_text_to_video(cls: Any, folder: Path, size: int, frames: int, steps: int, **kwargs: Any) -> Any:
    """The ``.frames`` of diffusers' text-to-video pipeline ``cls`` loaded from ``folder``, prompted
    "a cat runs in the park" against the negative prompt "dog" (the family tests' prompts)."""
    return reference(cls, folder)(
        "a cat runs in the park",
        negative_prompt="dog",
        height=size,
        width=size,
        num_frames=frames,
        num_inference_steps=steps,
        **kwargs,
    ).frames


def assert_frames_match(got: torch.Tensor, ref: Any, shape: tuple[int, ...]) -> None:
    """``got`` is uint8 of ``shape`` and equals diffusers' float frames ``ref`` in [0, 1] to rounding."""
    assert got.shape == shape and got.dtype == torch.uint8
    ref_u8 = torch.from_numpy(np.asarray(ref) * 255).round()
    assert (got.float() - ref_u8).abs().max() <= 1  # the same frames, up to rounding at .5
