"""AnimateDiff (Guo et al. 2024) from a local diffusers folder, as a multidiff pipeline.

The folder is an ``AnimateDiffPipeline``: ``unet`` (a ``UNetMotionModel``, or a ``UNet2DConditionModel``
that is merged with ``motion_adapter``, a ``MotionAdapter``, as diffusers does), ``vae`` (an
``AutoencoderKL`` applied frame by frame), ``text_encoder`` (``CLIPTextModel``), ``tokenizer`` and a
``DDIMScheduler`` or ``EulerDiscreteScheduler``.

What the diffusers pipeline does, reproduced here:

* prompts are tokenised to the tokenizer's ``model_max_length`` (padded, truncated) and encoded by CLIP
  (with the attention mask only when the encoder's config asks for it); the negative prompt (default
  ``""``) is padded to the same length; guidance ``u + g·(c - u)`` when ``g > 1``;
* the U-Net denoises latents ``[B, C, F, h, w]`` (multidiff's layout already) as an ε- or v-model on the
  scheduler's VP table (the text context repeated for every frame, as diffusers does);
* the grid is the scheduler's; DDIM's step is multidiff's DDIM with η = 0, Euler's is Euler in σ; the noise
  is scaled as diffusers scales it (VP state for DDIM);
* latents are the VAE's raw latents times ``scaling_factor``; frames are decoded one by one through a
  :class:`~multidiff.modalities.video.VideoAdapter` over an
  :class:`~multidiff.modalities.image.ImageAdapter` whose normalisation is exactly that factor.

Refused: ``clip_skip`` and IP-adapters (not offered), DDIM with ``clip_sample`` or thresholding, other
schedulers. Seeds: sample k's noise is drawn ``[C, F, h, w]`` from a generator seeded ``seed + k``, as
diffusers draws it with a list of generators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from multidiff.families._common import (
    TextToVideoPipeline,
    family_denoiser,
    load_component,
    load_scheduler,
    read_index,
)
from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
from multidiff.modalities.video import VideoAdapter

__all__ = [
    "AnimateDiffBackbone",
    "AnimateDiffPipeline",
    "encode_clip_text",
    "load_animatediff",
    "scaled_vae_adapter",
]


def encode_clip_text(
    tokenizer: Any, text_encoder: nn.Module, prompts: Sequence[str], max_length: int | None = None
) -> Tensor:
    """Prompts -> CLIP's last hidden states ``[B, L, D]`` as Stable Diffusion pipelines encode them (padded to
    ``max_length`` or the tokenizer's ``model_max_length``; the attention mask only when the encoder's
    config sets ``use_attention_mask``)."""
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length or tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(device)
    with torch.no_grad():
        return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0].float()


def scaled_vae_adapter(vae: nn.Module, chunk_frames: int = 16) -> VideoAdapter:
    """A per-frame :class:`VideoAdapter` whose latents are ``raw · vae.config.scaling_factor`` (the latent
    space of Stable Diffusion-family U-Nets): per-channel mean 0 and std ``sigma_data / scaling_factor``."""
    sf = float(vae.config.scaling_factor)
    cfg = ImageAdapterConfig(
        space="vae", channels=int(vae.config.in_channels), sigma_data=0.5, chunk_size=chunk_frames
    )
    c = int(vae.config.latent_channels)
    image = ImageAdapter(cfg, vae, mean=torch.zeros(c), std=torch.full((c,), 0.5 / sf))
    return VideoAdapter(image, chunk_frames)


class AnimateDiffBackbone(nn.Module):
    """AnimateDiff's motion U-Net with multidiff's backbone signature: ``forward(x, c_noise, *, context)``
    with x ``[B, C, F, h, w]`` and context ``[B, L, D]``, which is repeated for every frame (the U-Net
    attends per frame; diffusers' pipeline repeats it the same way)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, c_noise: Tensor, *, context: Tensor) -> Tensor:
        ctx = context.repeat_interleave(x.shape[2], dim=0)  # (B·F, L, D)
        return self.unet(x, c_noise, encoder_hidden_states=ctx, return_dict=False)[0]  # (B, C, F, h, w)


class AnimateDiffPipeline(TextToVideoPipeline):
    """Text-to-video with an AnimateDiff model (see the module docstring); build it with :func:`load_animatediff`.
    Its ``text_model`` is the CLIP text encoder; :meth:`generate` decodes frame by frame."""

    family: ClassVar[str] = "AnimateDiff"

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
        guidance: float = 7.5,
        seed: int | Sequence[int] | None = None,
        noise: Tensor | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> Tensor:
        """Latents ``[B, C, F, h, w]``, equal to diffusers' ``output_type="latent"``.

        Args:
            prompt: One prompt for all ``num`` videos, or one per video.
            frames: Number of frames (default 16, as diffusers).
            size: ``(H, W)`` or an int (default: the U-Net's sample size times the VAE's downsampling).
            num: Number of videos (default: one per prompt).
            negative_prompt: The guidance's unconditional prompt(s).
            steps: Sampler steps.
            guidance: CFG scale (off when <= 1).
            seed: Base seed (video k uses ``seed + k``) or one seed per video.
            noise: Standard normal noise ``[B, C, F, h, w]`` instead of seeded noise (diffusers' ``latents=``).
            callback: Called after each sampler step.
        """
        prompts, negs = self.prompts(prompt, negative_prompt, num, guidance > 1)
        shape = self.adapter.latent_shape(self.extent(frames, size))  # type: ignore[union-attr]
        context = encode_clip_text(self.tokenizer, self.text_model, prompts)  # (B, L, D)
        uncond = None
        if negs is not None:
            uncond = {"context": encode_clip_text(self.tokenizer, self.text_model, negs, context.shape[1])}
        return self.sample_family(
            shape,
            {"context": context},
            uncond,
            float(guidance),
            steps=steps,
            gens=self.generators(len(prompts), seed),
            noise=noise,
            callback=callback,
        )

    def image_to_video(self, *args: Any, **kwargs: Any) -> Tensor:  # type: ignore[override]
        raise ValueError("AnimateDiff text-to-video does not animate images (not supported here)")

    continue_video = image_to_video  # type: ignore[assignment]
    interpolate = image_to_video  # type: ignore[assignment]


def load_animatediff(folder: str | Path) -> AnimateDiffPipeline:
    """An :class:`AnimateDiffPipeline` from a local diffusers ``AnimateDiffPipeline`` folder; nothing is
    downloaded.

    Raises:
        ValueError: A component is missing, of another class, incompletely saved, or uses a setting multidiff
            does not reproduce (the message names the component and the setting).
    """
    folder = Path(folder)
    unet = load_component(folder, "unet", ("UNetMotionModel", "UNet2DConditionModel"))
    if type(unet).__name__ == "UNet2DConditionModel":  # merged with the motion adapter, as diffusers does
        from diffusers import UNetMotionModel

        if not isinstance(read_index(folder).get("motion_adapter"), list):
            raise ValueError(f"{folder / 'model_index.json'}: a UNet2DConditionModel needs a motion_adapter")
        adapter = load_component(folder, "motion_adapter", ("MotionAdapter",))
        unet = UNetMotionModel.from_unet2d(unet, adapter).eval().requires_grad_(False)
    if getattr(unet.config, "encoder_hid_dim_type", None) is not None:
        raise ValueError(
            f"{folder / 'unet'}: encoder_hid_dim_type={unet.config.encoder_hid_dim_type!r} (IP-adapter image "
            "projection) is not supported"
        )
    vae = load_component(folder, "vae", ("AutoencoderKL",))
    text_encoder = load_component(folder, "text_encoder", ("CLIPTextModel",))
    tokenizer = load_component(folder, "tokenizer")
    scheduler = load_scheduler(folder, ("DDIMScheduler", "EulerDiscreteScheduler"))
    if getattr(scheduler.config, "timestep_type", "discrete") != "discrete":
        raise ValueError(
            f"{folder / 'scheduler'}: timestep_type={scheduler.config.timestep_type!r} is not supported"
        )
    adapter = scaled_vae_adapter(vae)
    side = int(unet.config.sample_size) * adapter.image.downsample
    return AnimateDiffPipeline(
        family_denoiser(AnimateDiffBackbone(unet), scheduler),
        adapter,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        folder=folder,
        size=(side, side),
        frames=16,
    )
