"""Video adapters over the VAEs of pretrained video families, loaded from local diffusers folders.

Two kinds of video VAE, each a full :class:`~multidiff.modalities.base.Adapter`:

- :class:`TemporalDecoderAdapter`: Stable Video Diffusion's ``AutoencoderKLTemporalDecoder`` (Blattmann et
  al. 2023, "Stable Video Diffusion", Sec. 4 and App. D): frames are encoded one by one by a 2-D encoder,
  but the decoder mixes frames in time, so it decodes a chunk of ``num_frames`` frames together. Latents
  are the VAE's raw latents times ``scaling_factor``, as the diffusers pipeline feeds its U-Net.
- :class:`CausalVideoVAEAdapter`: a 3-D causal video VAE (LTX-Video's ``AutoencoderKLLTXVideo``, HaCohen
  et al. 2024): the first frame is encoded alone, every further ``temporal ratio`` frames into one latent
  frame. Latents are normalised as the LTX pipeline does, ``(raw - mean[c]) · scaling_factor / std[c]``
  with the VAE's own per-channel statistics.

Both keep the latent space of the diffusers pipeline unchanged (no statistics are fitted here), so a
family's denoiser sees exactly what it was trained on. Media are uint8 frames ``[B, F, H, W, C]`` (or float
in [-1, 1]), latents ``[B, C', F', h, w]``. diffusers is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from multidiff.modalities.base import Adapter, Extent
from multidiff.modalities.image import to_pixels, to_uint8
from multidiff.modalities.video import padded_frame_mask

__all__ = ["TemporalDecoderAdapter", "CausalVideoVAEAdapter", "from_pretrained_filled", "load_video_vae"]

#: The VAE class each adapter takes (diffusers class names).
_CLASSES = {"temporal_decoder": "AutoencoderKLTemporalDecoder", "causal_video_vae": "AutoencoderKLLTXVideo"}


def from_pretrained_filled(cls: Any, path: Path, *, does: str = "run", **kwargs: Any) -> nn.Module:
    """``cls.from_pretrained(path)`` from local files only, in eval mode without gradients, refused when its
    weights do not fill the model of its config (diffusers and transformers would leave such weights random
    and only warn).

    Args:
        cls: A diffusers or transformers model class.
        path: The model's folder.
        does: What the model would do with random weights, for the message (``"run"``, ``"decode"``).
        **kwargs: More keywords for ``from_pretrained``.

    Raises:
        ValueError: The folder does not load, or the weights do not fill the model (naming the folder).
    """
    name = cls.__name__
    try:
        model, info = cls.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True, **kwargs
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: could not load a {name} ({err})") from err
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing or info.get("mismatched_keys"):
        raise ValueError(
            f"{path}: the weights do not fill the {name} of its config ({len(missing)} missing, e.g. "
            f"{(missing or [''])[0]}); it would {does} with random weights"
        )
    return model.eval().requires_grad_(False)


def load_video_vae(path: str | os.PathLike[str], class_name: str) -> nn.Module:
    """Load a diffusers video VAE of class ``class_name`` from a local folder; nothing is downloaded.

    Args:
        path: A folder written by ``save_pretrained`` (``config.json`` and weights).
        class_name: ``"AutoencoderKLTemporalDecoder"`` or ``"AutoencoderKLLTXVideo"``.

    Raises:
        ValueError: The folder is missing, declares another class, or its weights do not fill the model
            (diffusers would leave those weights random and only warn).
    """
    import diffusers

    p = Path(path)
    if class_name not in _CLASSES.values():
        raise ValueError(
            f"video VAE class {class_name!r} is not supported; supported: {sorted(_CLASSES.values())}"
        )
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} holds no config.json: not a diffusers {class_name} folder")
    try:
        declared = json.loads((p / "config.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{p / 'config.json'}: unreadable ({err})") from err
    if declared not in (None, class_name):
        raise ValueError(f"{p} holds a {declared}, expected a {class_name}")
    return from_pretrained_filled(getattr(diffusers, class_name), p, does="decode", low_cpu_mem_usage=False)


def _frames_to_pixels(frames: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 / [-1, 1] frames ``[B, F, H, W, C]`` -> float pixels ``[B, F, C, H, W]``."""
    if frames.ndim != 5 or frames.shape[-1] != channels:
        raise ValueError(f"expected frames [B, F, H, W, {channels}], got shape {tuple(frames.shape)}")
    return to_pixels(frames)  # (B, F, C, H, W)


class _DiffusersVideoAdapter(Adapter):
    """What both adapters share: the VAE module, its folder name in a pipeline folder, serialisation."""

    modality = "video"
    kind: str = ""

    def __init__(self, vae: nn.Module, chunk_frames: int | None = None) -> None:
        super().__init__()
        expected = _CLASSES[self.kind]
        if type(vae).__name__ != expected:
            raise ValueError(f"{type(self).__name__} needs a diffusers {expected}, got {type(vae).__name__}")
        if chunk_frames is not None and (isinstance(chunk_frames, bool) or int(chunk_frames) < 1):
            raise ValueError(f"chunk_frames must be a positive int or None, got {chunk_frames!r}")
        self.vae = vae.eval().requires_grad_(False)
        self.chunk_frames = None if chunk_frames is None else int(chunk_frames)

    @property
    def channels(self) -> int:
        """Media channels C."""
        return int(self.vae.config.in_channels)

    @property
    def latent_channels(self) -> int:
        """Latent channels C'."""
        return int(self.vae.config.latent_channels)

    @property
    def device(self) -> torch.device:
        """Where the VAE is."""
        return next(self.vae.parameters()).device

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents [B, {self.latent_channels}, F, h, w], got shape {tuple(latents.shape)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The adapter type and chunk size (the VAE is saved beside it, in ``vae/``)."""
        return {"type": self.kind, "vae_class": _CLASSES[self.kind], "chunk_frames": self.chunk_frames}

    def save(self, folder: Path) -> None:
        """The VAE into ``folder/vae/`` (diffusers format)."""
        self.vae.save_pretrained(str(Path(folder) / "vae"), safe_serialization=True)

    def decode_pixels(self, latents: torch.Tensor, *, chunk_frames: int | None = None) -> torch.Tensor:
        """Latents ``[B, C', F', h, w]`` -> float pixels ``[B, C, F, H, W]`` (not clamped)."""
        raise NotImplementedError

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        extent: Extent | None = None,
        *,
        chunk_frames: int | None = None,
        out_device: torch.device | str | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Latents ``[B, C', F', h, w]`` -> uint8 frames ``[B, F, H, W, C]`` (:meth:`decode_pixels`, which
        takes ``options``, e.g. the causal VAE's decode ``noise``)."""
        px = self.decode_pixels(latents, chunk_frames=chunk_frames, **options)  # (B, C, F, H, W)
        frames = to_uint8(rearrange(px, "B C F H W -> B F C H W"))  # (B, F, H, W, C)
        return frames.to(out_device) if out_device is not None else frames

    @classmethod
    def _options(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The constructor's keywords saved in :meth:`to_dict`."""
        return {"chunk_frames": config.get("chunk_frames")}

    @classmethod
    def load(cls, config: dict[str, Any], folder: Path) -> _DiffusersVideoAdapter:
        """Rebuild from :meth:`to_config` and the VAE in ``folder/vae/``."""
        if config.get("type") != cls.kind:
            raise ValueError(f"{folder}: not a {cls.kind} adapter config (type={config.get('type')!r})")
        return cls(load_video_vae(Path(folder) / "vae", _CLASSES[cls.kind]), **cls._options(config))


class TemporalDecoderAdapter(_DiffusersVideoAdapter):
    """Frames <-> latents ``[B, C', F, h, w]`` through an ``AutoencoderKLTemporalDecoder`` (Stable Video
    Diffusion).

    Encoding is per frame (the posterior mode); decoding runs the frames of all videos, flattened in
    (video, frame) order, ``chunk_frames`` at a time with ``num_frames`` set to the chunk's length, exactly
    as diffusers' ``StableVideoDiffusionPipeline.decode_latents`` does (its ``decode_chunk_size``).

    Args:
        vae: The temporal-decoder VAE.
        chunk_frames: Frames per decoder call (None: the frames of one video, diffusers' default).
    """

    kind = "temporal_decoder"

    @property
    def scaling_factor(self) -> float:
        """The VAE's ``scaling_factor`` (latents = raw · factor)."""
        return float(self.vae.config.scaling_factor)

    @property
    def downsample(self) -> int:
        """Spatial downsampling of the latents."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, extent: Extent) -> tuple[int, ...]:
        """``(C', F, H / r, W / r)`` for ``Extent(frames=F, size=(H, W))``."""
        frames, (h, w) = extent.need("the temporal-decoder adapter", "frames", "size")
        r = self.downsample
        if h % r or w % r:
            raise ValueError(f"frame size {h}x{w} must be a multiple of the VAE downsampling {r}")
        return (self.latent_channels, frames, h // r, w // r)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the U-Net's latents (times ``scaling_factor``)."""
        return raw.float() * self.scaling_factor

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise` (``1 / scaling_factor`` times, as diffusers writes it)."""
        return 1 / self.scaling_factor * latents.float()

    @torch.no_grad()
    def encode_raw_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[N, C, H, W]`` in [-1, 1] -> raw latents ``[N, C', h, w]`` (posterior mode)."""
        return self.vae.encode(pixels.to(self.device)).latent_dist.mode()

    @torch.no_grad()
    def encode(self, media: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, F, H, W, C]`` -> latents ``[B, C', F, h, w]``, each frame encoded on its own."""
        px = _frames_to_pixels(torch.as_tensor(media), self.channels)  # (B, F, C, H, W)
        b = px.shape[0]
        raw = self.encode_raw_pixels(rearrange(px, "B F C H W -> (B F) C H W"))  # (B*F, C', h, w)
        return rearrange(self.normalise(raw), "(B F) C h w -> B C F h w", B=b)

    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        """Known frames ``[F', H, W, C]`` or ``[B, F', H, W, C]`` -> latents of the extent, zero after F'."""
        frames = self.latent_shape(extent)[1]
        v = torch.as_tensor(media)
        v = v[None] if v.ndim == 4 else v
        if v.ndim != 5 or v.shape[1] > frames:
            raise ValueError(
                f"known frames must be [F' <= {frames}, H, W, C] (or batched), got {tuple(v.shape)}"
            )
        z = self.encode(v)  # (B, C', F', h, w)
        return F.pad(z, (0, 0, 0, 0, 0, frames - z.shape[2]))

    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A per-frame mask ``[F']`` or ``[B, F']`` -> ``[B or 1, 1, F, 1, 1]`` (frames are encoded one by
        one, so a known frame gives a known latent frame)."""
        frames = self.latent_shape(extent)[1]
        return padded_frame_mask(mask, frames, self.device)[:, None, :, None, None]  # (B, 1, F, 1, 1)

    @torch.no_grad()
    def decode_pixels(self, latents: torch.Tensor, *, chunk_frames: int | None = None) -> torch.Tensor:
        """Latents ``[B, C', F, h, w]`` -> float pixels ``[B, C, F, H, W]`` (not clamped), decoded
        ``chunk_frames`` frames per call over the flattened (video, frame) axis."""
        self._check_latents(latents)
        b, _, f = latents.shape[:3]
        size = chunk_frames or self.chunk_frames or f
        flat = self.denormalise(rearrange(latents, "B C F h w -> (B F) C h w")).to(self.device)
        out = [
            self.vae.decode(flat[i : i + size], num_frames=flat[i : i + size].shape[0]).sample
            for i in range(0, flat.shape[0], size)
        ]  # each (n, C, H, W)
        return rearrange(torch.cat(out).float(), "(B F) C H W -> B C F H W", B=b, F=f)


class CausalVideoVAEAdapter(_DiffusersVideoAdapter):
    """Frames <-> latents ``[B, C', 1 + (F - 1) / t, H / s, W / s]`` through a 3-D causal video VAE
    (LTX-Video's ``AutoencoderKLLTXVideo``; t and s are its temporal and spatial compression ratios).

    Latents are normalised with the VAE's ``latents_mean``, ``latents_std`` and ``scaling_factor`` as the
    LTX pipeline does. A VAE with ``timestep_conditioning`` decodes at ``decode_timestep`` (LTX's default
    0.0), from latents mixed with noise as diffusers' LTX pipeline mixes them: ``(1 - s)·z + s·noise`` in the
    VAE's own latent space, ``s = decode_noise_scale`` (default: ``decode_timestep``, as diffusers).

    Args:
        vae: The video VAE.
        decode_timestep: The timestep the decoder is conditioned on (timestep-conditioned VAEs only).
        decode_noise_scale: s above; None takes ``decode_timestep``.
    """

    kind = "causal_video_vae"

    def __init__(
        self,
        vae: nn.Module,
        chunk_frames: int | None = None,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
    ) -> None:
        super().__init__(vae, chunk_frames)
        self.decode_timestep = float(decode_timestep)
        self.decode_noise_scale = float(decode_timestep if decode_noise_scale is None else decode_noise_scale)
        for name in ("decode_timestep", "decode_noise_scale"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    @property
    def decode_noise(self) -> bool:
        """Whether decoding mixes in noise (a timestep-conditioned VAE and a positive noise scale)."""
        return bool(getattr(self.vae.config, "timestep_conditioning", False)) and self.decode_noise_scale > 0

    @property
    def temporal_ratio(self) -> int:
        """Pixel frames per latent frame (after the first)."""
        return int(self.vae.temporal_compression_ratio)

    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent position along H and W."""
        return int(self.vae.spatial_compression_ratio)

    def latent_shape(self, extent: Extent) -> tuple[int, ...]:
        """``(C', (F - 1) // t + 1, H / s, W / s)``; F must be ``1 + k·t`` and H, W multiples of s."""
        frames, (h, w) = extent.need("the video VAE adapter", "frames", "size")
        t, s = self.temporal_ratio, self.spatial_ratio
        if (frames - 1) % t:
            raise ValueError(f"frames={frames} must be 1 + a multiple of the VAE's temporal ratio {t}")
        if h % s or w % s:
            raise ValueError(f"frame size {h}x{w} must be a multiple of the VAE's spatial ratio {s}")
        return (self.latent_channels, (frames - 1) // t + 1, h // s, w // s)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        return mean, std, float(self.vae.config.scaling_factor)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """``(raw - mean) · scaling_factor / std`` per channel (LTX's ``_normalize_latents``)."""
        mean, std, sf = self._stats(raw.float())
        return (raw.float() - mean) * sf / std

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents · std / scaling_factor + mean`` (LTX's ``_denormalize_latents``)."""
        mean, std, sf = self._stats(latents.float())
        return latents.float() * std / sf + mean

    @torch.no_grad()
    def encode(self, media: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, F, H, W, C]`` -> normalised latents (posterior mode)."""
        px = rearrange(_frames_to_pixels(torch.as_tensor(media), self.channels), "B F C H W -> B C F H W")
        return self.normalise(self.vae.encode(px.to(self.device)).latent_dist.mode())

    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        """Known first frames ``[F', H, W, C]`` (F' = 1 + k·t) -> latents of the extent, zero after them."""
        frames = self.latent_shape(extent)[1]
        v = torch.as_tensor(media)
        v = v[None] if v.ndim == 4 else v
        if v.ndim != 5 or (v.shape[1] - 1) % self.temporal_ratio:
            raise ValueError(
                f"known frames must be [F', H, W, C] (or batched) with F' = 1 + k·{self.temporal_ratio}, "
                f"got {tuple(v.shape)}"
            )
        z = self.encode(v)
        if z.shape[2] > frames:
            raise ValueError(f"{v.shape[1]} known frames for a video of {frames} latent frames")
        return F.pad(z, (0, 0, 0, 0, 0, frames - z.shape[2]))

    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A per-frame mask ``[F']`` or ``[B, F']`` -> ``[B or 1, 1, F_lat, 1, 1]``: latent frame 0 is known
        when pixel frame 0 is, latent frame k > 0 when all of pixel frames ``(k-1)·t + 1 … k·t`` are."""
        (frames,) = extent.need("a video mask", "frames")
        n_lat = self.latent_shape(extent)[1]
        m = padded_frame_mask(mask, frames, self.device)  # (B, F)
        t = self.temporal_ratio
        rest = m[:, 1:].reshape(m.shape[0], n_lat - 1, t).amin(-1)  # (B, F_lat - 1)
        return torch.cat([m[:, :1], rest], 1)[:, None, :, None, None]

    @torch.no_grad()
    def decode_pixels(
        self, latents: torch.Tensor, *, chunk_frames: int | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents ``[B, C', F', h, w]`` -> float pixels ``[B, C, F, H, W]`` (not clamped), the whole clip in
        one decoder call: the causal VAE does not decode frame chunks independently, so ``chunk_frames``
        must stay None. ``noise`` (standard normal, the latents' shape) is the decode noise, needed when
        :attr:`decode_noise` (the pipeline draws it from each sample's generator, as diffusers)."""
        if chunk_frames is not None:
            raise ValueError("the causal video VAE decodes whole clips; chunk_frames is not supported")
        self._check_latents(latents)
        z = self.denormalise(latents).to(self.device)
        temb = None
        if getattr(self.vae.config, "timestep_conditioning", False):
            temb = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=z.dtype)
        if self.decode_noise:
            if noise is None or noise.shape != z.shape:
                raise ValueError(
                    f"decode_noise_scale {self.decode_noise_scale}: decoding needs noise= of the latents' shape "
                    f"{tuple(z.shape)} (or decode_noise_scale=0)"
                )
            s = self.decode_noise_scale
            z = (1 - s) * z + s * noise.to(z)
        return self.vae.decode(z, temb, return_dict=False)[0].float()

    def to_dict(self) -> dict[str, Any]:
        """As the base, with ``decode_timestep`` and ``decode_noise_scale``."""
        return {
            **super().to_dict(),
            "decode_timestep": self.decode_timestep,
            "decode_noise_scale": self.decode_noise_scale,
        }

    @classmethod
    def _options(cls, config: dict[str, Any]) -> dict[str, Any]:
        """As the base, with ``decode_timestep`` and ``decode_noise_scale``."""
        return {
            **super()._options(config),
            "decode_timestep": float(config.get("decode_timestep", 0.0)),
            "decode_noise_scale": config.get("decode_noise_scale"),
        }
