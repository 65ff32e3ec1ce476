"""AudioLDM (Liu et al. 2023) from a local diffusers folder, as a multidiff :class:`~multidiff.pipeline.Pipeline`.

An AudioLDM folder (``AudioLDMPipeline``) holds a U-Net over mel-VAE latents conditioned on the CLAP text
embedding through its class embedding (``class_embed_type="simple_projection"``), the mel VAE
(``AutoencoderKL``, 16 kHz, 64 mel bins), a CLAP text encoder and a SpeechT5 HiFi-GAN vocoder (transformers'
``SpeechT5HifiGan``: upsample rates 5, 4, 2, 2, 2, which multidiff's own HiFi-GAN does not cover, so it is
wrapped as it is). The pieces become:

* denoiser: :func:`~multidiff.interop.diffusers.from_diffusers` on the U-Net with the scheduler's config; the
  text embedding reaches the U-Net's ``class_labels`` (``context_to="class_labels"``);
* adapter: :class:`AudioLDMAdapter`, latents ``[B, C, T/f, M/f]`` -> mel (VAE) -> waveform (vocoder);
* text encoder: :class:`ClapTextEncoder`, the L2-normalised CLAP text embedding as one context token; the
  null caption ``""`` is AudioLDM's unconditional input, as in diffusers.

AudioLDM 2 (``AudioLDM2Pipeline``: CLAP + Flan-T5 + a GPT-2 language model producing the conditioning
sequence) is refused by :func:`load_audioldm2`. diffusers and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from multidiff.families import _common
from multidiff.modalities.base import Adapter, Extent
from multidiff.pipeline import Pipeline

__all__ = [
    "AudioLDMAdapter",
    "AudioLDMFamilyPipeline",
    "ClapTextEncoder",
    "SpeechT5Vocoder",
    "load_audioldm",
    "load_audioldm2",
]

# diffusers scheduler -> the multidiff sampler that is the same algorithm on a σ grid
SAMPLER_OF_SCHEDULER: dict[str, str] = {
    "DDIMScheduler": "ddim",
    "DDPMScheduler": "ddpm",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "UniPCMultistepScheduler": "unipc",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "HeunDiscreteScheduler": "heun",
}


def read_index(folder: Path, pipeline: str, components: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """``folder/model_index.json``, checked to name ``pipeline`` and, for each component, one of the classes
    given (the message names the component, the class found and the file)."""
    index = folder / "model_index.json"
    data = _common.read_index(folder)
    if data.get("_class_name") != pipeline:
        raise ValueError(f"{index} describes {data.get('_class_name')!r}, not {pipeline}")
    for name, classes in components.items():
        entry = data.get(name)
        found = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
        if found not in classes:
            raise ValueError(
                f"{index}: component {name!r} is {found!r}; multidiff loads {pipeline} with {' or '.join(classes)}"
            )
        if not (folder / name).is_dir():
            raise ValueError(f"{folder / name}: the {name} folder named by {index} is missing")
    return data


def read_scheduler(folder: Path) -> tuple[str, dict[str, Any]]:
    """The scheduler's class name and config: the class ``model_index.json`` names (the one diffusers'
    pipeline instantiates, whatever the config's own ``_class_name`` says), with
    ``folder/scheduler/scheduler_config.json``."""
    path = folder / "scheduler" / "scheduler_config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({e})") from None
    entry = _common.read_index(folder).get("scheduler")
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else config.get("_class_name", "")
    return str(name), {**config, "_class_name": str(name)}


class SpeechT5Vocoder(nn.Module):
    """transformers' ``SpeechT5HifiGan`` as a multidiff vocoder: log-mel ``[B, T, M]`` -> waveform ``[B, N]``.

    It carries its mel settings (``model_in_dim`` bins, ``sampling_rate``, hop = the product of its upsample
    rates) so that a mismatched adapter is refused.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.num_mels = int(model.config.model_in_dim)
        self.sample_rate = int(model.config.sampling_rate)
        self.hop = int(math.prod(model.config.upsample_rates))

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or mel.shape[-1] != self.num_mels:
            raise ValueError(
                f"SpeechT5Vocoder needs log-mels [B, T, {self.num_mels}], got {tuple(mel.shape)}"
            )
        return self.model(mel)  # (B, N)


class AudioLDMAdapter(Adapter):
    """AudioLDM's mel VAE and vocoder: latents ``[B, C, T/f, M/f]`` (time, then mel bins; f the VAE's
    downsampling) <-> waveforms ``[B, 1, N]``.

    Latents are ``scaling_factor · z`` (diffusers' convention). Decoding only: the diffusers folder does not
    hold AudioLDM's mel front end (its STFT settings), so :meth:`encode` (audio-to-audio, inpainting) is
    refused.

    Args:
        vae: The ``AutoencoderKL`` over log-mels ``[B, 1, T, M]``.
        vocoder: The :class:`SpeechT5Vocoder`.
    """

    modality: ClassVar[str] = "audio"

    def __init__(self, vae: nn.Module, vocoder: SpeechT5Vocoder) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.vocoder = vocoder
        self.scaling_factor = float(vae.config.scaling_factor)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        if vocoder.num_mels % self.factor:
            raise ValueError(
                f"the vocoder's {vocoder.num_mels} mel bins are not divisible by the VAE's downsampling "
                f"{self.factor} (vae block_out_channels={list(vae.config.block_out_channels)})"
            )
        self.sample_rate = vocoder.sample_rate

    def num_samples_of(self, extent: Extent) -> int:
        (seconds,) = extent.need(type(self).__name__, "seconds")
        return int(seconds * self.sample_rate)

    def latent_shape(self, extent: Extent) -> tuple[int, ...]:
        """Mel frames ``int(seconds / (hop / rate))``, rounded up to the VAE's factor (as diffusers)."""
        (seconds,) = extent.need(type(self).__name__, "seconds")
        frames = int(seconds / (self.vocoder.hop / self.sample_rate))
        frames = math.ceil(frames / self.factor) * self.factor
        return (self.latent_channels, max(1, frames // self.factor), self.vocoder.num_mels // self.factor)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, extent: Extent | None = None) -> torch.Tensor:
        device = next(self.vae.parameters()).device
        mel = self.vae.decode(self.denormalise(latents.to(device))).sample  # (B, 1, T, M)
        wave = self.vocoder(mel[:, 0])  # (B, N)
        if extent is not None and extent.seconds is not None:
            wave = wave[:, : self.num_samples_of(extent)]
        return wave[:, None].float()  # (B, 1, N)

    def _no_encoder(self, what: str) -> ValueError:
        return ValueError(
            f"AudioLDMAdapter cannot {what}: the diffusers folder has no mel front end (the STFT settings the "
            "VAE was trained on), so audio-to-audio, inpainting and continuation are not supported"
        )

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        raise self._no_encoder("encode audio")

    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        raise self._no_encoder("encode known audio")

    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        raise self._no_encoder("map an audio mask to latents")

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.scaling_factor

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.scaling_factor

    def to_dict(self) -> dict[str, Any]:
        return {"type": "audioldm", "scaling_factor": self.scaling_factor, "sample_rate": self.sample_rate}

    def to_config(self) -> dict[str, Any]:
        raise ValueError(
            "an AudioLDM pipeline is not saved as a multidiff folder: keep its diffusers folder and load it "
            "with multidiff.families.load_family(folder)"
        )

    @classmethod
    def load(cls, config: dict[str, Any], folder: Path) -> AudioLDMAdapter:
        raise ValueError(f"{folder}: load AudioLDM with multidiff.families.load_family(<diffusers folder>)")


class ClapTextEncoder(nn.Module):
    """CLAP's text tower (Wu et al. 2023): the L2-normalised projected text embedding, one token per caption.

    ``encode(captions) -> (context [B, 1, D], mask [B, 1])`` with D the projection width; tokens are padded to
    the tokenizer's ``model_max_length`` as AudioLDM does.
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim = int(model.config.projection_dim)

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(captions, str):
            raise ValueError("pass a list of captions, not a single string")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(captions),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        out = self.model(batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        emb = F.normalize(out.text_embeds.float(), dim=-1)  # (B, D)
        return emb[:, None], torch.ones(emb.shape[0], 1, dtype=torch.bool, device=device)  # (B, 1, D), (B, 1)


class AudioLDMFamilyPipeline(Pipeline):
    """AudioLDM's pipeline, sampling as diffusers' ``AudioLDMPipeline`` does: on the σ grid of the folder's
    scheduler (:func:`~multidiff.interop.diffusers.sigmas_from_scheduler`) unless ``grid=`` names a multidiff
    grid, from the noise diffusers starts at for the same seeds (:meth:`initial_scale`); where the grid ends
    above σ = 0 (DDIM without ``set_alpha_to_one``, AudioLDM's own setting), diffusers' last step returns the
    VP-scaled state ``x / √(1 + σ²)`` there and its VAE decodes that, and so does this pipeline. The
    scheduler is read for its grid and its kind only."""

    def __init__(self, *args: Any, scheduler: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = scheduler

    def sigmas(self, steps: int | None = None, grid: str | None = None) -> torch.Tensor:
        if grid not in (None, "default"):
            return super().sigmas(steps, grid)
        from multidiff.interop.diffusers import sigmas_from_scheduler

        return sigmas_from_scheduler(self.scheduler, self.sampling.steps if steps is None else int(steps))

    def initial_scale(self, sigmas: torch.Tensor) -> float:
        """diffusers' start for a seed, ``noise · init_noise_sigma`` in the scheduler's own space, in σ-space
        (:func:`~multidiff.interop.diffusers.scheduler_scaling`)."""
        from multidiff.interop.diffusers import scheduler_scaling

        return scheduler_scaling(self.scheduler, sigmas)[0]

    def sample(  # type: ignore[override]
        self, num: int, shape: Sequence[int], *, sigmas: Any = None, steps: int | None = None,
        grid: str | None = None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        from multidiff.interop.diffusers import scheduler_scaling

        if sigmas is not None:  # the caller's grid: steps= and grid= are the base's to refuse
            kwargs.update(steps=steps, grid=grid)
        sigmas = self.sigmas(steps, grid) if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)
        latents = super().sample(num, shape, sigmas=sigmas, **kwargs)
        final = scheduler_scaling(self.scheduler, sigmas)[1]
        return latents * final if final != 1.0 else latents


def load_audioldm(folder: str | Path, *, device: str | torch.device | None = None) -> Any:
    """Load an ``AudioLDMPipeline`` folder as a multidiff :class:`~multidiff.pipeline.Pipeline`.

    ``pipe.generate(num, Extent(seconds=...), prompt=..., guidance=2.5, steps=..., seed=...)`` returns
    waveforms ``[B, 1, N]`` at ``pipe.adapter.sample_rate``. The sampler defaults to the multidiff sampler that
    is the scheduler's algorithm (DDIM for AudioLDM), on the scheduler's own σ grid, as diffusers samples
    (:class:`AudioLDMFamilyPipeline`); ``grid="karras"`` and the other multidiff grids stay available.

    Raises:
        ValueError: A component of another class than AudioLDM's, a missing folder, or a scheduler setting
            multidiff cannot represent (the message names it).
    """
    import diffusers
    import transformers

    from multidiff.core.denoiser import Denoiser
    from multidiff.interop.diffusers import DiffusersBackbone, prediction_from_config, schedule_from_config
    from multidiff.serialize import SamplingConfig

    folder = Path(folder)
    read_index(
        folder,
        "AudioLDMPipeline",
        {
            "unet": ("UNet2DConditionModel",),
            "vae": ("AutoencoderKL",),
            "text_encoder": ("ClapTextModelWithProjection",),
            "tokenizer": ("RobertaTokenizer", "RobertaTokenizerFast"),
            "vocoder": ("SpeechT5HifiGan",),
        },
    )
    name, sconfig = read_scheduler(folder)
    schedule = schedule_from_config(sconfig, name)
    prediction = prediction_from_config(sconfig, name)
    kw = {"local_files_only": True}
    unet = diffusers.UNet2DConditionModel.from_pretrained(str(folder / "unet"), **kw).eval()
    if unet.config.class_embed_type != "simple_projection":
        raise ValueError(
            f"{folder / 'unet'}: class_embed_type={unet.config.class_embed_type!r}; AudioLDM's U-Net takes "
            "the text embedding through class_embed_type='simple_projection'"
        )
    vae = diffusers.AutoencoderKL.from_pretrained(str(folder / "vae"), **kw)
    vocoder = SpeechT5Vocoder(transformers.SpeechT5HifiGan.from_pretrained(str(folder / "vocoder"), **kw))
    clap = transformers.ClapTextModelWithProjection.from_pretrained(str(folder / "text_encoder"), **kw)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"), **kw)
    text = ClapTextEncoder(clap, tokenizer)
    backbone = DiffusersBackbone(unet, context_to="class_labels", context_dim=text.dim)
    denoiser = Denoiser(backbone, prediction, schedule)  # type: ignore[arg-type]
    sampling = SamplingConfig(
        sampler=SAMPLER_OF_SCHEDULER.get(name, "dpmpp_2m"), steps=10, guidance=2.5, precision="fp32"
    )
    scheduler_class = getattr(diffusers, name, None)
    if scheduler_class is None:
        raise ValueError(f"{folder / 'scheduler'}: diffusers has no scheduler class {name!r}")
    scheduler = scheduler_class.from_pretrained(str(folder / "scheduler"), **kw)
    pipe = AudioLDMFamilyPipeline(
        denoiser, AudioLDMAdapter(vae, vocoder), sampling=sampling, text_encoder=text, scheduler=scheduler
    )
    pipe.sigmas(2)  # a scheduler multidiff cannot step as diffusers does is refused here, naming it
    return pipe.to(device) if device is not None else pipe


def load_audioldm2(folder: str | Path, **kwargs: Any) -> Any:
    """AudioLDM 2 is not supported (refused with the reason).

    Raises:
        ValueError: always: its conditioning is produced by a GPT-2 language model generating a sequence
            of AudioMAE-like tokens from CLAP and Flan-T5 embeddings, with two cross-attention streams in
            the U-Net (``AudioLDM2UNet2DConditionModel``); multidiff has no wrapper for that chain yet.
    """
    raise ValueError(
        f"{folder}: AudioLDM2Pipeline is not supported yet: its conditioning (CLAP + Flan-T5 projected and "
        "extended by a GPT-2 language model, fed to AudioLDM2UNet2DConditionModel's two cross-attention "
        "streams) has no multidiff wrapper; AudioLDM (AudioLDMPipeline) and Stable Audio Open are supported"
    )
