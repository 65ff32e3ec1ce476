"""Caption encoders for cross-attention conditioning, and caption/label dropout for guidance.

Every encoder follows the :class:`TextEncoder` protocol, ``encode(captions) -> (context, mask)`` with
``context`` ``[B, L, D]`` and ``mask`` ``[B, L]`` bool (True = a real token), which is exactly what a
backbone takes as ``context=`` / ``context_mask=``. Two encoders exist:

* :class:`ByteTextEncoder`: a small trainable transformer over UTF-8 bytes, trained together with the
  diffusion model; it needs no download and no tokenizer files.
* :class:`HFTextEncoder`: a frozen transformers CLIP text model or T5 encoder read from a local folder
  (``transformers`` is an optional dependency, imported when one is loaded).

Classifier-free guidance (Ho and Salimans 2022) trains the unconditional branch by replacing captions
with the empty "null caption" :data:`NULL_CAPTION` and class labels with the null label, each with
probability p, drawn from each sample's own seed: :func:`multidiff.train.drop_captions` and
:func:`multidiff.train.drop_labels`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from multidiff.nn.io import PretrainedMixin
from multidiff.nn.layers import Attention, Mlp, rotary_tables

__all__ = [
    "NULL_CAPTION",
    "TEXT_ENCODER_PRESETS",
    "ByteTextEncoder",
    "ByteTextEncoderConfig",
    "ByteTokenizer",
    "HFTextEncoder",
    "TextEncoder",
    "load_text_encoder",
]

NULL_CAPTION = ""
"""The caption that stands for "no caption" in classifier-free guidance."""


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns captions into cross-attention context.

    Attributes:
        dim: Width D of the context tokens (the backbone's ``context_dim``).
    """

    dim: int

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of captions.

        Args:
            captions: B strings; ``""`` is the null caption.

        Returns:
            ``(context [B, L, D] float, mask [B, L] bool)``, True on real tokens.
        """
        ...


# --------------------------------------------------------------------------------------------------
# Caption and label dropout
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Built-in byte-level encoder
# --------------------------------------------------------------------------------------------------


class ByteTokenizer:
    """UTF-8 byte tokenizer: id 0 is padding, ids 1..256 are bytes 0..255, id 257 starts every caption.

    The start token makes the null caption ``""`` one real token, so the encoder learns an embedding
    for "no caption" rather than handing the backbone an empty context. Captions longer than
    ``max_length - 1`` bytes are cut (possibly inside a multi-byte character; the tokens stay valid).

    Args:
        max_length: Most tokens per caption, start token included.
    """

    PAD = 0
    BOS = 257
    VOCAB_SIZE = 258

    def __init__(self, max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"ByteTokenizer.max_length must be >= 1, got {max_length}")
        self.max_length = max_length

    def ids(self, caption: str) -> list[int]:
        """Token ids of one caption (start token first, at most ``max_length``)."""
        if not isinstance(caption, str):
            raise ValueError(f"captions must be str, got {type(caption).__name__}: {caption!r}")
        data = caption.encode("utf-8")[: self.max_length - 1]
        return [self.BOS] + [b + 1 for b in data]

    def __call__(
        self, captions: Sequence[str], pad_to: int | None = None, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize a batch, padding on the right.

        Args:
            captions: B strings.
            pad_to: Pad to this length (at least the longest caption); default the longest caption.
            device: Where to put the tensors.

        Returns:
            ``(ids [B, L] int64, mask [B, L] bool)``.
        """
        if isinstance(captions, str):
            raise ValueError("pass a list of captions, not a single string")
        rows = [self.ids(c) for c in captions]
        longest = max((len(r) for r in rows), default=1)
        length = longest if pad_to is None else pad_to
        if length < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest caption ({longest} tokens)")
        ids = torch.full((len(rows), length), self.PAD, dtype=torch.long)  # (B, L)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        ids = ids.to(device)
        return ids, ids != self.PAD  # (B, L), (B, L)


@dataclass(frozen=True)
class ByteTextEncoderConfig:
    """Settings of a :class:`ByteTextEncoder`.

    Attributes:
        dim: Token width D (the backbone's ``context_dim``).
        depth: Transformer blocks.
        heads: Attention heads (``dim`` must be a multiple; the head width must be even for RoPE).
        mlp_ratio: Hidden width of the MLPs relative to ``dim``.
        max_length: Most tokens per caption, the start token included.
        qk_norm: RMS-normalise queries and keys (Dehghani et al. 2023).
    """

    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    max_length: int = 128
    qk_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "heads", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ByteTextEncoderConfig.{name} must be a positive int, got {value!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"ByteTextEncoderConfig.depth must be an int >= 0, got {self.depth!r}")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(
                f"ByteTextEncoderConfig.dim={self.dim} must split into heads={self.heads} heads of even width"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"ByteTextEncoderConfig.mlp_ratio must be positive, got {self.mlp_ratio!r}")


TEXT_ENCODER_PRESETS: dict[str, ByteTextEncoderConfig] = {
    "tiny": ByteTextEncoderConfig(dim=64, depth=2, heads=2, mlp_ratio=2.0, max_length=64),
    "small": ByteTextEncoderConfig(dim=256, depth=4, heads=4, max_length=128),
    "base": ByteTextEncoderConfig(dim=512, depth=6, heads=8, max_length=256),
}


class _Block(nn.Module):
    """Pre-LayerNorm transformer block (Xiong et al. 2020): x += attn(LN x); x += mlp(LN x)."""

    def __init__(self, config: ByteTextEncoderConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.heads, qk_norm=config.qk_norm)
        self.norm2 = nn.LayerNorm(config.dim)
        self.mlp = Mlp(config.dim, int(round(config.dim * config.mlp_ratio)))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask, rope=rope)  # (B, L, D)
        return x + self.mlp(self.norm2(x))  # (B, L, D)


class ByteTextEncoder(PretrainedMixin, nn.Module):
    """A small trainable transformer over UTF-8 bytes; needs no download and no tokenizer files.

    Token embedding, ``depth`` pre-LN transformer blocks with rotary positions (RoPE, Su et al. 2021)
    and a key-padding mask, and a final LayerNorm. Positions start at 0 in every caption and padded
    keys are masked out, so a caption's context does not depend on the other captions of the batch or
    on the padding length; padded rows of the output are set to zero. No dropout: ``encode`` is
    deterministic. Saved with ``save_pretrained`` / ``from_pretrained`` (config.json + safetensors).

    Args:
        config: Sizes.
    """

    config_class = ByteTextEncoderConfig

    def __init__(self, config: ByteTextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or ByteTextEncoderConfig()
        self.tokenizer = ByteTokenizer(self.config.max_length)
        self.embed = nn.Embedding(ByteTokenizer.VOCAB_SIZE, self.config.dim, padding_idx=ByteTokenizer.PAD)
        self.blocks = nn.ModuleList(_Block(self.config) for _ in range(self.config.depth))
        self.norm = nn.LayerNorm(self.config.dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[ByteTokenizer.PAD].zero_()

    @property
    def dim(self) -> int:
        """Context width D."""
        return self.config.dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode token ids.

        Args:
            ids: (B, L) int64 from :class:`ByteTokenizer`.
            mask: (B, L) bool, True on real tokens.

        Returns:
            (B, L, D) context, zero on padded positions.
        """
        B, L = ids.shape
        if L > self.config.max_length:
            raise ValueError(f"{L} tokens exceed max_length={self.config.max_length}")
        x = self.embed(ids)  # (B, L, D)
        rope = rotary_tables((L,), self.config.dim // self.config.heads, device=ids.device)  # 2 x (L, Dh/2)
        for block in self.blocks:
            x = block(x, mask, rope)  # (B, L, D)
        x = self.norm(x)  # (B, L, D)
        return x * mask[..., None].to(x.dtype)  # (B, L, D)

    def encode(self, captions: Sequence[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ``(context [B, L, D], mask [B, L] bool)`` on the module's device.

        Args:
            captions: B strings; ``""`` is the null caption (the start token alone).
            pad_to: Pad every caption to this many tokens (default: the longest in the batch).
        """
        device = self.embed.weight.device
        ids, mask = self.tokenizer(captions, pad_to=pad_to, device=device)  # (B, L), (B, L)
        return self(ids, mask), mask


# --------------------------------------------------------------------------------------------------
# Frozen transformers encoders from a local folder
# --------------------------------------------------------------------------------------------------

_CLIP_TYPES = ("clip", "clip_text_model")
_T5_TYPES = ("t5", "mt5", "umt5")


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "HFTextEncoder needs the optional package transformers: pip install transformers "
            "(or pip install 'multidiff[text]')"
        ) from err
    return transformers


class HFTextEncoder(nn.Module):
    """A frozen transformers CLIP text model (Radford et al. 2021) or T5 encoder (Raffel et al. 2020).

    Returns the last hidden states and the tokenizer's attention mask. Build it with
    :meth:`from_local`; nothing is ever downloaded.

    Args:
        model: The transformers text model (``CLIPTextModel`` or ``T5EncoderModel``).
        tokenizer: Its tokenizer.
        max_length: Most tokens per caption (default the tokenizer's ``model_max_length``, capped at 512).
        pad_to_max_length: Pad every batch to ``max_length`` (as Stable Diffusion does with CLIP)
            instead of to the longest caption.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, max_length: int | None = None, pad_to_max_length: bool = False
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        if max_length is None:
            max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
        if max_length < 1:
            raise ValueError(f"HFTextEncoder.max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length
        self.dim = int(
            model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model
        )

    def train(self, mode: bool = True) -> HFTextEncoder:
        """The encoder stays in eval mode (frozen); ``train()`` is a no-op for it."""
        super().train(mode)
        self.model.eval()
        return self

    @classmethod
    def from_local(
        cls,
        path: str | os.PathLike[str],
        *,
        max_length: int | None = None,
        pad_to_max_length: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> HFTextEncoder:
        """Load a CLIP text model or a T5 encoder and its tokenizer from a local folder only.

        The folder holds what ``save_pretrained`` of transformers writes (``config.json``, weights and
        tokenizer files); a full CLIP model folder works too (its text tower is loaded). Files are read
        with ``local_files_only=True``: a missing file is an error, never a download.

        Args:
            path: The folder.
            max_length: See the class.
            pad_to_max_length: See the class.
            dtype: Weights dtype (default float32).
            device: Where to put the model.

        Raises:
            ImportError: If transformers is not installed (with the pip command).
            ValueError: If the folder does not exist or holds another kind of model.
        """
        transformers = _import_transformers()
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"HFTextEncoder.from_local: {folder} is not a folder")
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model_type = getattr(config, "model_type", None)
        if model_type in _CLIP_TYPES:
            model = transformers.CLIPTextModel.from_pretrained(str(folder), local_files_only=True)
        elif model_type in _T5_TYPES:
            model = transformers.T5EncoderModel.from_pretrained(str(folder), local_files_only=True)
        else:
            raise ValueError(
                f"{folder} holds a {model_type!r} model; HFTextEncoder reads CLIP ({_CLIP_TYPES}) "
                f"or T5 ({_T5_TYPES}) text encoders"
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        encoder = cls(model, tokenizer, max_length=max_length, pad_to_max_length=pad_to_max_length)
        if device is not None or dtype is not None:
            encoder.to(device=device, dtype=dtype)
        return encoder

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ``(last hidden states [B, L, D], attention mask [B, L] bool)``."""
        if isinstance(captions, str):
            raise ValueError("pass a list of captions, not a single string")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(captions),
            padding="max_length" if self.pad_to_max_length else "longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(device)  # (B, L)
        mask = batch["attention_mask"].to(device).bool()  # (B, L)
        out = self.model(input_ids=ids, attention_mask=mask.long())
        return out.last_hidden_state.float(), mask  # (B, L, D), (B, L)


def load_text_encoder(
    path: str | os.PathLike[str], *, device: torch.device | str | None = None
) -> ByteTextEncoder | HFTextEncoder:
    """Load a text encoder folder: a :class:`ByteTextEncoder` written by ``save_pretrained``, else a
    transformers CLIP/T5 folder through :meth:`HFTextEncoder.from_local`.

    Raises:
        ValueError: If the folder does not exist.
    """
    import json

    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"text encoder folder {folder} does not exist")
    config = folder / "config.json"
    if config.is_file():
        payload = json.loads(config.read_text())
        if isinstance(payload, dict) and payload.get("model") == ByteTextEncoder.__name__:
            return ByteTextEncoder.from_pretrained(folder, device=device)
    return HFTextEncoder.from_local(folder, device=device)
