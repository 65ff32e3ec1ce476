"""Stable Video Diffusion (Blattmann et al. 2023) from a local diffusers folder, as a multidiff pipeline.

The folder is a ``StableVideoDiffusionPipeline``: ``unet`` (``UNetSpatioTemporalConditionModel``), ``vae``
(``AutoencoderKLTemporalDecoder``), ``image_encoder`` (``CLIPVisionModelWithProjection``),
``feature_extractor`` (``CLIPImageProcessor``) and ``scheduler`` (``EulerDiscreteScheduler`` with
``timestep_type="continuous"``: v-prediction, σ in [0.002, 700], c_noise = ln(σ)/4, which multidiff's
:class:`~multidiff.core.schedules.ContinuousVPSchedule` is).

Conditioning, as the diffusers pipeline builds it from one image (uint8 ``[H, W, C]``, the video's size):

* image embeddings: the image in [-1, 1], resized to 224 x 224 with diffusers' anti-aliased resize, back to
  [0, 1], normalised by the feature extractor, through the CLIP image encoder -> ``[B, 1, D]``;
* image latents: the image in [-1, 1] plus ``noise_aug_strength`` times Gaussian noise, encoded by the VAE
  (posterior mode, unscaled) and concatenated to every frame's latents on the channel axis;
* ``added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]``.

Guidance rises linearly over the frames, from ``min_guidance`` on the first frame to ``max_guidance`` on
the last; the unconditional branch has zero embeddings and zero image latents, and guidance is applied only
when ``max_guidance > 1`` (as diffusers). Sampling is multidiff's Euler on the scheduler's σ grid, from the
noise scaled by its ``init_noise_sigma``; frames are decoded by the temporal decoder in chunks of
``decode_chunk`` frames (:class:`~multidiff.modalities.temporal_vae.TemporalDecoderAdapter`).
Per-sample seeds draw sample k's augmentation noise and then its latent noise from one generator seeded
``seed + k``, in diffusers' order and layout, so ``seed`` gives what diffusers gives with
``generator=[torch.Generator().manual_seed(seed + k) ...]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.families._common import FamilyVideoPipeline, family_denoiser, load_component, load_scheduler
from multidiff.modalities.temporal_vae import TemporalDecoderAdapter

__all__ = ["SVDBackbone", "SVDPipeline", "load_svd"]

#: The CLIP input size the diffusers pipeline resizes the conditioning image to.
CLIP_SIZE = (224, 224)


class SVDBackbone(nn.Module):
    """SVD's U-Net with multidiff's backbone signature and latent layout.

    ``forward(x, c_noise, *, image_latents, image_embeds, added_time_ids)``: x ``[B, C, F, h, w]`` (already
    scaled by c_in), ``image_latents`` ``[B, C, h, w]`` (repeated over frames and concatenated on channels),
    ``image_embeds`` ``[B, 1, D]``, ``added_time_ids`` ``[B, 3]``; returns the v-prediction ``[B, C, F, h, w]``.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        *,
        image_latents: Tensor,
        image_embeds: Tensor,
        added_time_ids: Tensor,
    ) -> Tensor:
        f = x.shape[2]
        z = rearrange(x, "B C F h w -> B F C h w")
        img = image_latents[:, None].expand(-1, f, -1, -1, -1).to(z.dtype)  # (B, F, C, h, w)
        out = self.unet(
            torch.cat([z, img], dim=2),  # (B, F, 2C, h, w)
            c_noise,
            encoder_hidden_states=image_embeds,
            added_time_ids=added_time_ids,
            return_dict=False,
        )[0]  # (B, F, C, h, w)
        return rearrange(out, "B F C h w -> B C F h w")


class SVDPipeline(FamilyVideoPipeline):
    """Image-to-video with a Stable Video Diffusion model (see the module docstring).

    Build it with :func:`load_svd`. :meth:`image_to_video` returns uint8 frames; :meth:`sample_latents`
    the latents diffusers returns with ``output_type="latent"``.
    """

    family: ClassVar[str] = "Stable Video Diffusion"

    def __init__(
        self,
        denoiser: Denoiser,
        adapter: nn.Module,
        *,
        image_encoder: nn.Module,
        feature_extractor: Any,
        **kw: Any,
    ):
        super().__init__(denoiser, adapter, **kw)
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor

    @property
    def unet(self) -> nn.Module:
        """The diffusers U-Net."""
        return self.backbone.unet

    def draw_noise(self, gens: Sequence[torch.Generator], shape: Sequence[int]) -> Tensor:
        """Noise drawn as diffusers draws it, ``[F, C, h, w]`` per sample, returned as ``[B, C, F, h, w]``."""
        c, f, h, w = shape
        return torch.stack([torch.randn((f, c, h, w), generator=g).transpose(0, 1) for g in gens])

    # ------------------------------------------------------------------------------- conditioning
    @torch.no_grad()
    def encode_image(self, pixels01: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> CLIP image embeddings ``[B, 1, D]`` (diffusers' path for
        PIL images: anti-aliased resize to 224 x 224 in [-1, 1], then the feature extractor's normalisation)."""
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )

        x = _resize_with_antialiasing(pixels01 * 2.0 - 1.0, CLIP_SIZE)
        x = (x + 1.0) / 2.0
        pv = self.feature_extractor(
            images=x,
            do_normalize=True,
            do_center_crop=False,
            do_resize=False,
            do_rescale=False,
            return_tensors="pt",
        ).pixel_values
        dtype = next(self.image_encoder.parameters()).dtype
        emb = self.image_encoder(pv.to(self.device, dtype)).image_embeds  # (B, D)
        return emb[:, None]  # (B, 1, D)

    def added_time_ids(self, fps: int, motion_bucket_id: int, noise_aug_strength: float, num: int) -> Tensor:
        """``[num, 3]`` = ``[fps - 1, motion_bucket_id, noise_aug_strength]`` (diffusers passes fps - 1).

        Raises:
            ValueError: The U-Net's added-time embedding does not take three values.
        """
        need = int(self.unet.add_embedding.linear_1.in_features)
        have = int(self.unet.config.addition_time_embed_dim) * 3
        if need != have:
            raise ValueError(
                f"{self.folder / 'unet'}: add_embedding takes {need} features but addition_time_embed_dim x 3 "
                f"= {have}; the U-Net's config does not match SVD's conditioning"
            )
        ids = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=torch.float32)
        return ids.repeat(num, 1).to(self.device)

    # ------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_latents(
        self,
        image: Tensor,
        frames: int | None = None,
        *,
        num: int | None = None,
        steps: int = 25,
        min_guidance: float = 1.0,
        max_guidance: float = 3.0,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        seed: int | Sequence[int] | None = None,
        noise: Tensor | None = None,
        aug_noise: Tensor | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> Tensor:
        """Latents ``[B, C, F, h, w]`` of the videos animating ``image``, equal to diffusers'
        ``output_type="latent"`` (transposed to multidiff's layout).

        Args:
            image: uint8 ``[H, W, 3]`` (one image for all ``num`` videos) or ``[B, H, W, 3]``; H and W are the
                video's size.
            frames: Number of frames (default: the U-Net's ``num_frames``).
            num: Number of videos (default: the number of images).
            steps: Sampler steps.
            min_guidance: Guidance on the first frame.
            max_guidance: Guidance on the last frame (guidance is off when it is <= 1).
            fps: Frame rate conditioning (the model gets ``fps - 1``).
            motion_bucket_id: Motion amount conditioning.
            noise_aug_strength: Std of the noise added to the conditioning image.
            seed: Base seed (video k uses ``seed + k``) or one seed per video.
            noise: Standard normal latent noise ``[B, C, F, h, w]`` instead of seeded noise (diffusers'
                ``latents=``, transposed).
            aug_noise: Standard normal noise ``[B, 3, H, W]`` for the augmentation instead of seeded noise.
            callback: Called after each sampler step.
        """
        img = torch.as_tensor(image)
        img = img[None] if img.ndim == 3 else img
        if img.ndim != 4 or img.shape[-1] != 3 or img.dtype != torch.uint8:
            raise ValueError(
                f"image must be uint8 [H, W, 3] or [B, H, W, 3], got {tuple(img.shape)} {img.dtype}"
            )
        num = img.shape[0] if num is None else int(num)
        if img.shape[0] not in (1, num):
            raise ValueError(f"{img.shape[0]} images for {num} videos")
        img = img.expand(num, *img.shape[1:])
        h, w = int(img.shape[1]), int(img.shape[2])
        if h % 8 or w % 8:
            raise ValueError(f"the image (video) size {h}x{w} must be divisible by 8 (as diffusers requires)")
        extent = self.extent(frames, (h, w))
        frames = extent.frames
        shape = self.adapter.latent_shape(extent)  # type: ignore[union-attr]
        gens = self.generators(num, seed)
        pixels01 = img.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
        guided = max_guidance > 1
        embeds = self.encode_image(pixels01)  # (B, 1, D)
        if aug_noise is None:
            aug_noise = torch.cat(
                [torch.randn((1, 3, h, w), generator=g) for g in gens]
            )  # before the latents
        cond_px = pixels01 * 2.0 - 1.0 + noise_aug_strength * torch.as_tensor(aug_noise, dtype=torch.float32)
        image_latents = self.adapter.encode_raw_pixels(cond_px)  # type: ignore[union-attr]  (B, C, h, w)
        cond = {
            "image_latents": image_latents,
            "image_embeds": embeds,
            "added_time_ids": self.added_time_ids(fps, motion_bucket_id, noise_aug_strength, num),
        }
        uncond = None
        scale: Tensor | float = 1.0
        if guided:
            uncond = {
                "image_latents": torch.zeros_like(image_latents),
                "image_embeds": torch.zeros_like(embeds),
            }
            scale = (
                torch.linspace(min_guidance, max_guidance, frames).view(1, 1, frames, 1, 1).to(self.device)
            )
        return self.sample_family(
            shape, cond, uncond, scale, steps=steps, gens=gens, noise=noise, callback=callback
        )

    @torch.no_grad()
    def image_to_video(  # type: ignore[override]
        self, image: Tensor, frames: int | None = None, *, decode_chunk: int | None = None, **kwargs: Any
    ) -> Tensor:
        """uint8 frames ``[B, F, H, W, 3]`` animating ``image``: :meth:`sample_latents` (same keywords), then
        the temporal decoder, ``decode_chunk`` frames per call (default: all frames of a video)."""
        latents = self.sample_latents(image, frames, **kwargs)
        return self.adapter.decode(latents, chunk_frames=decode_chunk, out_device="cpu")  # type: ignore[union-attr]

    def generate(self, num: int, *args: Any, **kwargs: Any) -> Tensor:  # type: ignore[override]
        raise ValueError("Stable Video Diffusion animates an image: use image_to_video(image, frames, ...)")


def load_svd(folder: str | Path) -> SVDPipeline:
    """A :class:`SVDPipeline` from a local ``StableVideoDiffusionPipeline`` folder; nothing is downloaded.

    Raises:
        ValueError: A component is missing, of another class, incompletely saved, or uses a setting multidiff
            does not reproduce (the message names the component and the setting).
    """
    folder = Path(folder)
    unet = load_component(folder, "unet", ("UNetSpatioTemporalConditionModel",))
    vae = load_component(folder, "vae", ("AutoencoderKLTemporalDecoder",))
    image_encoder = load_component(folder, "image_encoder", ("CLIPVisionModelWithProjection",))
    feature_extractor = load_component(
        folder, "feature_extractor", ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil")
    )
    scheduler = load_scheduler(folder, ("EulerDiscreteScheduler",))
    adapter = TemporalDecoderAdapter(vae)
    size = int(unet.config.sample_size) * adapter.downsample
    return SVDPipeline(
        family_denoiser(SVDBackbone(unet), scheduler),
        adapter,
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
        scheduler=scheduler,
        folder=folder,
        size=(size, size),
        frames=int(unet.config.num_frames),
    )
