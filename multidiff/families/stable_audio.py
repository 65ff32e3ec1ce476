"""Stable Audio Open (Evans et al. 2024) from a local diffusers folder, as a multidiff Pipeline.

A ``StableAudioPipeline`` folder holds a DiT over waveform-autoencoder latents (``StableAudioDiTModel``), the
Oobleck autoencoder, a T5 encoder, a projection model (the text projection and the ``seconds_start`` /
``seconds_total`` number conditioners) and its scheduler (``CosineDPMSolverMultistepScheduler``: EDM σ in
[0.3, 500], c_noise = (2/π)·atan σ, v-prediction with σ_data = 1, DPM-Solver++(2M) SDE). They become:

* denoiser: :class:`StableAudioBackbone` (DiT + projection: cross-attention input ``[text; start; total]``,
  global input ``[start, total]``, rotary tables) with the scheduler's schedule and prediction;
* adapter: :class:`~multidiff.modalities.waveform.OobleckAdapter` (the DiT's fixed ``sample_size`` latent
  frames, the waveform cut to the requested seconds);
* text encoder: :class:`StableAudioT5`, T5's hidden states padded to the tokenizer's length; the null caption
  ``""`` is the all-zero conditioning of Stable Audio's unconditional branch (text and seconds tokens zero).

diffusers and transformers are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from multidiff.families.audioldm import read_index, read_scheduler
from multidiff.modalities.base import Extent
from multidiff.nn.text import NULL_CAPTION, HFTextEncoder
from multidiff.pipeline import Pipeline

__all__ = ["StableAudioBackbone", "StableAudioFamilyPipeline", "StableAudioT5", "load_stable_audio"]


class StableAudioT5(HFTextEncoder):
    """T5's last hidden states, padded to ``max_length`` (the DiT attends to every position); the null caption
    gets an all-False mask, which :class:`StableAudioBackbone` reads as "unconditional"."""

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        context, mask = super().encode(captions)  # (B, L, D), (B, L)
        null = torch.tensor([c == NULL_CAPTION for c in captions], device=mask.device)
        return context, mask & ~null[:, None]


@dataclass(frozen=True)
class StableAudioBackboneConfig:
    """Attributes:
    context_dim: width of the text encoder's hidden states (T5's d_model)."""

    context_dim: int


class StableAudioBackbone(nn.Module):
    """``StableAudioDiTModel`` with its conditioning built as diffusers' ``StableAudioPipeline`` does.

    ``forward(x [B, C, T], c_noise [B], *, context [B, L, D_t], context_mask [B, L], seconds_start [B],
    seconds_total [B])``: text = projection(context)·mask; cross-attention input ``[text; start; total]``
    ``[B, L + 2, D]``, all zeros for a sample whose mask is all False (the unconditional branch); global input
    ``[start, total]`` ``[B, 1, 2D]``; rotary tables over ``T + 1`` positions.
    """

    def __init__(self, transformer: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.projection = projection
        self.config = StableAudioBackboneConfig(int(projection.config.text_encoder_dim))
        self.rotary_dim = int(transformer.config.attention_head_dim) // 2

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        *,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        seconds_start: Tensor | None = None,
        seconds_total: Tensor | None = None,
    ) -> Tensor:
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        if context is None or context_mask is None or seconds_start is None or seconds_total is None:
            raise ValueError(
                "StableAudioBackbone needs context, context_mask, seconds_start and seconds_total"
            )
        b = x.shape[0]
        mask = context_mask.to(x.dtype)[..., None]  # (B, L, 1)
        text = self.projection(text_hidden_states=context).text_hidden_states * mask  # (B, L, D)
        sec = self.projection(start_seconds=seconds_start.float(), end_seconds=seconds_total.float())
        start, total = sec.seconds_start_hidden_states, sec.seconds_end_hidden_states  # (B, 1, D) each
        cross = torch.cat([text, start, total], dim=1)  # (B, L + 2, D)
        null = ~context_mask.bool().any(dim=1)  # (B,)
        cross = torch.where(null[:, None, None], torch.zeros_like(cross), cross)
        glob = torch.cat([start, total], dim=2)  # (B, 1, 2D)
        # built on the device: no host-to-device copy per step
        positions = torch.arange(x.shape[-1] + 1, device=x.device)
        rotary = get_1d_rotary_pos_embed(
            self.rotary_dim, positions, use_real=True, repeat_interleave_real=False
        )
        out = self.transformer(
            x,
            c_noise.expand(b),
            encoder_hidden_states=cross,
            global_hidden_states=glob,
            rotary_embedding=rotary,
            return_dict=False,
        )[0]
        return out  # (B, C, T)


class StableAudioFamilyPipeline(Pipeline):
    """A :class:`~multidiff.pipeline.Pipeline` that adds Stable Audio's ``seconds_start`` / ``seconds_total``.

    The DiT always generates its ``sample_size`` latent frames; the waveform is the window
    ``[seconds_start, seconds_start + seconds)`` of the decoded audio, as in diffusers.
    """

    @property
    def sample_rate(self) -> int:
        return self.adapter.sample_rate  # type: ignore[union-attr]

    @property
    def max_seconds(self) -> float:
        """Longest clip: ``sample_size · hop / rate``."""
        a = self.adapter
        return a.latent_length * a.hop / a.sample_rate  # type: ignore[union-attr]

    def generate(  # type: ignore[override]
        self, num: int, seconds: float | None = None, *, seconds_start: float = 0.0, **kwargs: Any
    ) -> Tensor:
        """Generate ``num`` clips of ``seconds`` (default the longest), waveforms ``[B, C, N]``.

        Keywords as :meth:`Pipeline.generate` (prompt, guidance, steps, sampler, seed, sigmas, ...).
        """
        seconds = self.max_seconds if seconds is None else float(seconds)
        end = seconds_start + seconds
        if seconds_start < 0 or end > self.max_seconds + 1e-9:
            raise ValueError(
                f"seconds_start={seconds_start} and seconds={seconds} leave the model's "
                f"{self.max_seconds} s (sample_size of the transformer)"
            )
        cond = dict(kwargs.pop("cond", None) or {})
        cond["seconds_start"] = torch.full((num,), float(seconds_start), device=self.device)
        cond["seconds_total"] = torch.full((num,), float(end), device=self.device)
        wave = super().generate(num, Extent(seconds=end), cond=cond, **kwargs)  # (B, C, N_end)
        return wave[..., int(seconds_start * self.sample_rate) :]

    def save_pretrained(self, directory: Any, state_dict: Any = None) -> Path:
        raise ValueError(
            "a Stable Audio pipeline is not saved as a multidiff folder: keep its diffusers folder and load it "
            "with multidiff.families.load_family(folder)"
        )


def _sampler_of(name: str, config: dict[str, Any], folder: Path) -> str:
    where = f"{folder / 'scheduler'}: {name}"
    if name not in ("CosineDPMSolverMultistepScheduler", "EDMDPMSolverMultistepScheduler"):
        raise ValueError(f"{where} is not a Stable Audio scheduler (CosineDPMSolverMultistepScheduler)")
    for key, want in (("solver_order", 2), ("solver_type", "midpoint"), ("final_sigmas_type", "zero")):
        if config.get(key, want) != want:
            raise ValueError(f"{where}: {key}={config[key]!r} has no multidiff sampler (supported: {want!r})")
    if name == "CosineDPMSolverMultistepScheduler" or config.get("algorithm_type") == "sde-dpmsolver++":
        return "dpmpp_2m_sde"
    return "dpmpp_2m"


def load_stable_audio(
    folder: str | Path, *, device: str | torch.device | None = None
) -> StableAudioFamilyPipeline:
    """Load a ``StableAudioPipeline`` folder as a :class:`StableAudioFamilyPipeline`.

    ``pipe.generate(num, seconds, prompt=..., guidance=7.0, steps=100, seed=...)`` returns waveforms
    ``[B, C, N]`` at ``pipe.sample_rate``; the sampler is DPM-Solver++(2M) SDE on the scheduler's σ grid
    (its noise drawn from each sample's seed rather than diffusers' Brownian tree).

    Raises:
        ValueError: A component of another class, a missing folder, or a scheduler setting multidiff cannot
            represent (the message names it).
    """
    import diffusers
    import transformers

    from multidiff.core.denoiser import Denoiser
    from multidiff.interop.diffusers import prediction_from_config, schedule_from_config
    from multidiff.modalities.waveform import OobleckAdapter
    from multidiff.serialize import SamplingConfig

    folder = Path(folder)
    read_index(
        folder,
        "StableAudioPipeline",
        {
            "transformer": ("StableAudioDiTModel",),
            "vae": ("AutoencoderOobleck",),
            "text_encoder": ("T5EncoderModel",),
            "tokenizer": ("T5Tokenizer", "T5TokenizerFast"),
            "projection_model": ("StableAudioProjectionModel",),
        },
    )
    name, sconfig = read_scheduler(folder)
    sampler = _sampler_of(name, sconfig, folder)
    schedule = schedule_from_config(sconfig, name)
    prediction = prediction_from_config(sconfig, name)
    kw = {"local_files_only": True}
    transformer = diffusers.StableAudioDiTModel.from_pretrained(str(folder / "transformer"), **kw).eval()
    projection = diffusers.StableAudioProjectionModel.from_pretrained(str(folder / "projection_model"), **kw)
    vae = diffusers.AutoencoderOobleck.from_pretrained(str(folder / "vae"), **kw)
    t5 = transformers.T5EncoderModel.from_pretrained(str(folder / "text_encoder"), **kw)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"), **kw)
    text = StableAudioT5(t5, tokenizer, max_length=int(tokenizer.model_max_length), pad_to_max_length=True)
    backbone = StableAudioBackbone(transformer, projection.eval())
    denoiser = Denoiser(backbone, prediction, schedule, float(sconfig.get("sigma_data", 1.0)))  # type: ignore[arg-type]
    adapter = OobleckAdapter(vae, latent_length=int(transformer.config.sample_size))
    sampling = SamplingConfig(sampler=sampler, steps=100, guidance=7.0, precision="fp32")
    pipe = StableAudioFamilyPipeline(denoiser, adapter, sampling=sampling, text_encoder=text)
    return pipe.to(device) if device is not None else pipe
