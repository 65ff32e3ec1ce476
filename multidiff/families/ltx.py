"""LTX-Video (HaCohen et al. 2024) from a local diffusers folder, as a multidiff pipeline.

The folder is an ``LTXPipeline``: ``transformer`` (``LTXVideoTransformer3DModel``), ``vae``
(``AutoencoderKLLTXVideo``, a causal 3-D VAE), ``text_encoder`` (a T5 encoder from transformers),
``tokenizer`` and ``scheduler`` (``FlowMatchEulerDiscreteScheduler``: rectified flow, the transformer
predicts the velocity at ``timestep = 1000·t``).

What the diffusers pipeline does, reproduced here:

* prompts are tokenised to ``max_sequence_length`` tokens (padded, truncated), encoded by T5 without an
  attention mask, and the padding mask goes to the transformer's cross-attention;
* latents ``[B, C, F', h, w]`` (normalised with the VAE's statistics) are packed into tokens
  ``[B, F'·h'·w', C·pt·p·p]`` for the transformer, with rotary positions scaled by
  ``(temporal ratio / frame_rate, spatial ratio, spatial ratio)``;
* the grid is ``t = linspace(1, 1/N, N)`` shifted by the scheduler (with ``mu`` from the video's token
  count when it shifts dynamically), then 0; multidiff integrates it in σ = t/(1 - t) with Euler, which is
  flow-matching Euler in t; t = 1 becomes σ = :data:`~multidiff.families._common.FLOW_T1_SIGMA` with the
  noise scaled so the transformer sees exactly diffusers' input;
* classifier-free guidance with the negative prompt (default ``""``) when ``guidance > 1``;
* decoding by the VAE (:class:`~multidiff.modalities.temporal_vae.CausalVideoVAEAdapter`), at
  ``decode_timestep`` for timestep-conditioned VAEs, with diffusers' decode noise ``(1 - s)·z + s·noise``
  (``s = decode_noise_scale``, by default ``decode_timestep``), the noise drawn next from each sample's
  generator as diffusers draws it.

Refused rather than approximated: ``guidance_rescale`` (not offered), a scheduler with stochastic sampling.
Seeds: sample k's noise is drawn ``[C, F', h, w]`` from a generator seeded ``seed + k``, as diffusers draws
it with a list of generators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from multidiff.families._common import (
    TextToVideoPipeline,
    family_denoiser,
    load_component,
    load_scheduler,
    scheduler_grid,
)
from multidiff.modalities.temporal_vae import CausalVideoVAEAdapter

__all__ = ["LTXBackbone", "LTXPipeline", "encode_t5", "load_ltx"]


def encode_t5(
    tokenizer: Any, text_encoder: nn.Module, prompts: Sequence[str], max_sequence_length: int
) -> tuple[Tensor, Tensor]:
    """Prompts -> ``(embeddings [B, L, D], padding mask [B, L] bool)`` as the LTX pipeline encodes them:
    padded and truncated to ``max_sequence_length`` tokens, encoded without an attention mask."""
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_sequence_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    with torch.no_grad():
        emb = text_encoder(tokens.input_ids.to(device))[0]  # (B, L, D)
    return emb.float(), tokens.attention_mask.bool().to(device)


class LTXBackbone(nn.Module):
    """LTX's transformer with multidiff's backbone signature: latents ``[B, C, F, h, w]`` in and out.

    ``forward(x, c_noise, *, context, context_mask, rope_interpolation_scale)`` packs x into patch tokens,
    calls the transformer at ``timestep = c_noise`` and unpacks its velocity.
    """

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.p = int(transformer.config.patch_size)
        self.pt = int(transformer.config.patch_size_t)

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        *,
        context: Tensor,
        context_mask: Tensor,
        rope_interpolation_scale: tuple[float, float, float],
    ) -> Tensor:
        p, pt = self.p, self.pt
        f, h, w = x.shape[2] // pt, x.shape[3] // p, x.shape[4] // p
        tokens = rearrange(x, "B C (F t) (H p) (W q) -> B (F H W) (C t p q)", t=pt, p=p, q=p)
        out = self.transformer(
            hidden_states=tokens,  # (B, L, C·pt·p·p)
            encoder_hidden_states=context,
            timestep=c_noise,
            encoder_attention_mask=context_mask,
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=rope_interpolation_scale,
            return_dict=False,
        )[0]
        return rearrange(
            out, "B (F H W) (C t p q) -> B C (F t) (H p) (W q)", F=f, H=h, W=w, t=pt, p=p, q=p
        )  # (B, C, F, h, w)


def pack_latents(latents: Tensor, p: int = 1, pt: int = 1) -> Tensor:
    """``[B, C, F, h, w]`` -> LTX's tokens ``[B, L, C·pt·p·p]`` (the layout diffusers' ``latents=`` takes)."""
    return rearrange(latents, "B C (F t) (H p) (W q) -> B (F H W) (C t p q)", t=pt, p=p, q=p)


def unpack_latents(tokens: Tensor, shape: Sequence[int], p: int = 1, pt: int = 1) -> Tensor:
    """Inverse of :func:`pack_latents` for latents of ``shape = (C, F, h, w)``."""
    _, f, h, w = shape
    return rearrange(
        tokens, "B (F H W) (C t p q) -> B C (F t) (H p) (W q)", F=f // pt, H=h // p, W=w // p, t=pt, p=p, q=p
    )


class LTXPipeline(TextToVideoPipeline):
    """Text-to-video with an LTX-Video model (see the module docstring); build it with :func:`load_ltx`.
    Its ``text_model`` is the T5 encoder; :meth:`generate` decodes whole clips (no ``decode_chunk``)."""

    family: ClassVar[str] = "LTX-Video"

    def grid(self, steps: int, shape: Sequence[int]) -> tuple[Tensor, float, float]:
        """The LTX pipeline's grid: ``linspace(1, 1/N, N)`` shifted (``mu`` from the token count)."""
        cfg = self.scheduler.config
        tokens = int(np.prod(shape[1:])) if len(shape) == 4 else int(cfg.get("base_image_seq_len", 256))
        base_len, max_len = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        base_shift, max_shift = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
        m = (max_shift - base_shift) / (max_len - base_len)  # diffusers' calculate_shift: linear in tokens
        mu = tokens * m + (base_shift - m * base_len)
        return scheduler_grid(self.scheduler, steps, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)

    @torch.no_grad()
    def sample_latents(
        self,
        prompt: str | Sequence[str],
        frames: int | None = None,
        size: int | Sequence[int] | None = None,
        *,
        num: int | None = None,
        negative_prompt: str | Sequence[str] = "",
        steps: int = 50,
        guidance: float = 3.0,
        frame_rate: float = 25,
        max_sequence_length: int = 128,
        seed: int | Sequence[int] | None = None,
        noise: Tensor | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> Tensor:
        """Normalised latents ``[B, C, F', h, w]``, equal to diffusers' ``output_type="latent"`` unpacked.

        Args:
            prompt: One prompt for all ``num`` videos, or one per video.
            frames: Pixel frames, ``1 + k·t`` (default 161, as diffusers).
            size: ``(H, W)`` or an int (default ``(512, 704)``, as diffusers).
            num: Number of videos (default: one per prompt).
            negative_prompt: The guidance's unconditional prompt(s).
            steps: Sampler steps.
            guidance: CFG scale (off when <= 1).
            frame_rate: Frames per second (scales the temporal rotary positions).
            max_sequence_length: Text tokens.
            seed: Base seed (video k uses ``seed + k``) or one seed per video.
            noise: Standard normal noise ``[B, C, F', h, w]`` instead of seeded noise (diffusers' ``latents=``
                unpacked).
            callback: Called after each sampler step.
        """
        prompts, negs = self.prompts(prompt, negative_prompt, num, guidance > 1)
        extent = self.extent(frames, size)
        h, w = extent.size  # type: ignore[misc]
        if h % 32 or w % 32:
            raise ValueError(f"the LTX pipeline needs a frame size divisible by 32, got {h}x{w}")
        shape = self.adapter.latent_shape(extent)  # type: ignore[union-attr]
        gens = self.generators(len(prompts), seed)
        emb, mask = encode_t5(self.tokenizer, self.text_model, prompts, max_sequence_length)
        a: CausalVideoVAEAdapter = self.adapter  # type: ignore[assignment]
        rope = (a.temporal_ratio / frame_rate, a.spatial_ratio, a.spatial_ratio)
        cond: dict[str, Any] = {"context": emb, "context_mask": mask, "rope_interpolation_scale": rope}
        uncond = None
        if negs is not None:
            n_emb, n_mask = encode_t5(self.tokenizer, self.text_model, negs, max_sequence_length)
            uncond = {"context": n_emb, "context_mask": n_mask}
        return self.sample_family(
            shape, cond, uncond, float(guidance), steps=steps, gens=gens, noise=noise, callback=callback
        )

    def decode_latents(
        self, latents: Tensor, decode_chunk: int | None, seed: int | Sequence[int], noise: Tensor | None
    ) -> Tensor:
        """The VAE's frames, with the decode noise of a timestep-conditioned VAE drawn from each sample's
        generator after its initial noise (first, when ``noise=`` was given), as diffusers draws both from
        ``generator=``."""
        a: CausalVideoVAEAdapter = self.adapter  # type: ignore[assignment]
        decode_noise = None
        if a.decode_noise:
            gens = self.generators(latents.shape[0], seed)
            if noise is None:
                self.draw_noise(gens, latents.shape[1:])  # the initial noise, drawn again to advance them
            decode_noise = self.draw_noise(gens, latents.shape[1:])
        return a.decode(latents, chunk_frames=decode_chunk, out_device="cpu", noise=decode_noise)

    def image_to_video(self, *args: Any, **kwargs: Any) -> Tensor:  # type: ignore[override]
        raise ValueError(
            "the LTX text-to-video pipeline does not animate images (LTXImageToVideoPipeline is not supported)"
        )

    continue_video = image_to_video  # type: ignore[assignment]
    interpolate = image_to_video  # type: ignore[assignment]


def load_ltx(
    folder: str | Path, *, decode_timestep: float = 0.0, decode_noise_scale: float | None = None
) -> LTXPipeline:
    """An :class:`LTXPipeline` from a local diffusers ``LTXPipeline`` folder; nothing is downloaded.

    Args:
        folder: The diffusers folder.
        decode_timestep: Timestep a timestep-conditioned VAE decodes at (diffusers' default 0.0; its docs
            use 0.03 with LTX 0.9.1).
        decode_noise_scale: The decode noise's weight (diffusers' ``decode_noise_scale``); None takes
            ``decode_timestep``, as diffusers.

    Raises:
        ValueError: A component is missing, of another class, incompletely saved, or uses a setting multidiff
            does not reproduce (the message names the component and the setting).
    """
    folder = Path(folder)
    transformer = load_component(folder, "transformer", ("LTXVideoTransformer3DModel",))
    vae = load_component(folder, "vae", ("AutoencoderKLLTXVideo",))
    text_encoder = load_component(folder, "text_encoder", ("T5EncoderModel",))
    tokenizer = load_component(folder, "tokenizer")
    scheduler = load_scheduler(folder, ("FlowMatchEulerDiscreteScheduler",))
    return LTXPipeline(
        family_denoiser(LTXBackbone(transformer), scheduler),
        CausalVideoVAEAdapter(vae, decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        folder=folder,
        size=(512, 704),
        frames=161,
    )
