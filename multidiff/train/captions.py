"""Caption conditioning for the train recipes (audio, video): one trainable module, per-sample caption
dropout, and the checks a captioned data folder must pass.

* :class:`CaptionDenoiser`: the denoiser and its text encoder as one module, so DDP, the optimiser, EMA and
  checkpoints cover both.
* :func:`drop_captions`: classifier-free guidance training (Ho & Salimans 2022, Sec. 3.2), drawn from each
  sample's own seed so that a resumed run drops the same captions.
* :func:`require_caption_metadata`, :func:`distinct_captions`: a folder's ``metadata.csv`` and a caption
  for every file, refused with a message naming the folder (and a file) otherwise.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.nn.text import NULL_CAPTION, TEXT_ENCODER_PRESETS, ByteTextEncoder, load_text_encoder
from multidiff.train.step import sample_generators

__all__ = [
    "add_caption_options",
    "caption_encoder",
    "CaptionDenoiser",
    "check_caption_dropout",
    "trained_net",
    "distinct_captions",
    "drop_captions",
    "require_caption_metadata",
]

# Salt of the caption-dropout stream drawn from each sample's seed (multidiff.train.step uses 0 for the
# noise and sigma, 1 for label dropout).
_CAPTION_DROP = 2


def add_caption_options(p: argparse.ArgumentParser) -> None:
    """``--captions``, ``--caption-dropout`` and ``--text-encoder``, as every captioned train recipe has them."""
    p.add_argument(
        "--captions",
        action="store_true",
        help="caption-conditional on metadata.csv captions (cross-attention)",
    )
    p.add_argument("--caption-dropout", type=float, default=0.1, help="null-caption probability (for CFG)")
    p.add_argument(
        "--text-encoder",
        help="local transformers CLIP/T5 folder, kept frozen (default: a trained byte encoder)",
    )


def caption_encoder(captions: bool, text_encoder: str | None, preset: str) -> nn.Module | None:
    """The text encoder of a run: None without captions, the frozen transformers CLIP/T5 encoder in the
    local folder ``text_encoder``, or else a new trainable :class:`ByteTextEncoder` of the size named
    ``preset`` (the recipes' presets and the encoder presets share their names).

    Raises:
        ValueError: If ``text_encoder`` is not a loadable local encoder folder.
    """
    if not captions:
        return None
    if text_encoder:
        return load_text_encoder(text_encoder)
    return ByteTextEncoder(TEXT_ENCODER_PRESETS[preset])


class CaptionDenoiser(nn.Module):
    """The denoiser and its text encoder as one module, so DDP, the optimiser, EMA and checkpoints cover
    both (a frozen transformers encoder is carried along with ``requires_grad=False``).

    Args:
        denoiser: The denoiser over latents (its backbone has ``context_dim`` = the encoder width).
        text_encoder: A :class:`~multidiff.nn.text.ByteTextEncoder` (trained) or a frozen transformers
            encoder.
    """

    def __init__(self, denoiser: Denoiser, text_encoder: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.text_encoder = text_encoder

    def forward(self, x: Tensor, sigma: Tensor, *, captions: list[str], **cond: Any) -> Tensor:
        """``D(x, σ, context=E(captions))``: captions -> context ``[B, L, D]`` -> the denoiser."""
        context, mask = self.text_encoder.encode(captions)  # (B, L, D), (B, L)
        return self.denoiser(x, sigma, context=context, context_mask=mask, **cond)


def trained_net(denoiser: Denoiser, text_encoder: nn.Module | None) -> nn.Module:
    """What a recipe trains, averages and checkpoints: the denoiser alone, or the denoiser with its text
    encoder as one :class:`CaptionDenoiser` (parameter names then start with ``denoiser.`` and
    ``text_encoder.``; the same call on the pipeline's copies gives the names ``ema.copy_to`` needs)."""
    return denoiser if text_encoder is None else CaptionDenoiser(denoiser, text_encoder)


def check_caption_dropout(p: float) -> None:
    """Refuse a caption-dropout probability outside [0, 1) (1 would never show a caption).

    Raises:
        ValueError: Naming ``p``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"caption dropout must lie in [0, 1), got {p}")


def drop_captions(captions: Sequence[str], seeds: Tensor | Sequence[int], p: float) -> list[str]:
    """Replace each caption by the null caption with probability ``p``, drawn from the sample's own seed
    (so a resumed run drops the same captions; Ho & Salimans 2022, Sec. 3.2).

    Args:
        captions: B captions.
        seeds: B per-sample seeds (the data stream's ``sample_seed``).
        p: Drop probability in [0, 1).

    Returns:
        A new list of B captions.

    Raises:
        ValueError: If ``p`` lies outside [0, 1).
    """
    check_caption_dropout(p)
    gens = sample_generators(seeds, _CAPTION_DROP)
    return [NULL_CAPTION if bool(torch.rand((), generator=g) < p) else c for c, g in zip(captions, gens)]


class CaptionedFile(Protocol):
    """A dataset entry as the folder datasets hold them: a relative path and maybe a caption."""

    @property
    def rel(self) -> str: ...

    @property
    def caption(self) -> str | None: ...


def require_caption_metadata(root: str | os.PathLike[str]) -> Path:
    """``root/metadata.csv``, where a caption-conditional run reads its captions.

    Raises:
        ValueError: If the folder has none.
    """
    path = Path(root) / "metadata.csv"
    if not path.is_file():
        raise ValueError(f"{root} has no metadata.csv (columns path, caption)")
    return path


def distinct_captions(entries: Iterable[CaptionedFile], root: str | os.PathLike[str]) -> list[str]:
    """The distinct captions of a dataset's files, sorted (the recipes' preview prompts).

    Args:
        entries: The dataset's files (``dataset.entries``).
        root: The dataset folder, for the message.

    Raises:
        ValueError: If a file has no caption; the message counts them and names one.
    """
    entries = list(entries)
    missing = [e.rel for e in entries if e.caption is None]
    if missing:
        raise ValueError(
            f"{len(missing)} file(s) in {root} have no captions in metadata.csv (e.g. {missing[0]})"
        )
    return sorted({e.caption for e in entries if e.caption is not None})
