"""Images as pixels in [-1, 1] or as latents of a diffusers ``AutoencoderKL``.

Media are channels-last: an image batch is ``[B, H, W, C]``, uint8 (0..255) as read from files, or
floating point already in [-1, 1]. Models see channels-first ``[B, C, H, W]``.

Two latent spaces:

- ``"pixels"``: the latents are the pixels, ``x = u / 127.5 - 1`` in [-1, 1]. Natural images in this
  range have a standard deviation near 0.5, the ``sigma_data`` of EDM (Karras et al. 2022, Sec. 5).
- ``"vae"``: the latents of a KL-regularised autoencoder (Rombach et al. 2022, "High-Resolution Image
  Synthesis with Latent Diffusion Models", Sec. 3), loaded from a local folder only. Latent diffusion
  rescales them by one global factor (0.18215 for Stable Diffusion's VAE), which is only right for that
  VAE; here the per-channel mean and std are measured on the data (:meth:`ImageAdapter.fit_stats`) and
  ``z = sigma_data * (raw - mean[c]) / std[c]``, as EDM2 does for its latents (Karras et al. 2024,
  "Analyzing and Improving the Training Dynamics of Diffusion Models", App. on latent normalisation).

The VAE runs in chunks of ``chunk_size`` images, so encoding and decoding large batches (or the frames
of a long video) need bounded memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multidiff.modalities.base import Adapter, Extent
from multidiff.nn.io import config_from_dict

__all__ = [
    "ImageAdapter",
    "ImageAdapterConfig",
    "load_vae",
    "to_pixels",
    "to_uint8",
]

_SPACES = ("pixels", "vae")
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Channels-last media ``[..., H, W, C]`` -> channels-first float32 pixels ``[..., C, H, W]`` in [-1, 1].

    uint8 values map by ``u / 127.5 - 1``; floating-point input must be in [-1, 1] already (values of 0..255
    in a float tensor are refused, not clamped to white).
    """
    if images.ndim < 3:
        raise ValueError(f"expected images [..., H, W, C], got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.float() / 127.5 - 1.0
    elif images.is_floating_point():
        x = images.float()
        top = float(x.abs().amax()) if x.numel() else 0.0  # float input comes from a caller, not the loaders
        if top > 1.5:  # a 0..255 picture; a decoder's slight overshoot of 1 passes
            raise ValueError(
                f"float pixels must lie in [-1, 1], got values up to {top:g}; pass uint8 for 0..255 pictures"
            )
    else:
        raise ValueError(f"images must be uint8 or floating point in [-1, 1], got {images.dtype}")
    return x.movedim(-1, -3)  # (..., C, H, W)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Channels-first pixels ``[..., C, H, W]`` in [-1, 1] -> channels-last uint8 ``[..., H, W, C]`` (clamped)."""
    if pixels.ndim < 3:
        raise ValueError(f"expected pixels [..., C, H, W], got shape {tuple(pixels.shape)}")
    u = ((pixels.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u.movedim(-3, -1).contiguous()  # (..., H, W, C)


def load_vae(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Load a diffusers ``AutoencoderKL`` from a local folder; nothing is downloaded.

    Args:
        path: A folder written by ``save_pretrained`` (``config.json`` and weights), or a pipeline folder
            with such a folder in ``vae/``.
        dtype: Weight dtype.
        device: Where to put it (default CPU).

    Raises:
        ValueError: If the folder does not exist or holds no AutoencoderKL (the folder is named).
    """
    from diffusers import AutoencoderKL

    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"VAE folder {p} does not exist (train one with recipes/train_vae.py)")
    if not (p / "config.json").is_file() and (p / "vae" / "config.json").is_file():
        p = p / "vae"
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} holds no config.json: not a diffusers AutoencoderKL folder")
    try:
        declared = json.loads((p / "config.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{p / 'config.json'}: unreadable ({err})") from err
    if declared not in (None, "AutoencoderKL"):
        # e.g. Stable Video Diffusion's AutoencoderKLTemporalDecoder: loading it as an AutoencoderKL would leave
        # its decoder randomly initialised (diffusers only warns); refuse rather than decode noise
        raise ValueError(
            f"{p} holds a {declared}, not an AutoencoderKL: the image and video adapters decode frame by frame "
            "with an AutoencoderKL and do not support this VAE class"
        )
    try:
        vae, info = AutoencoderKL.from_pretrained(
            str(p),
            local_files_only=True,
            torch_dtype=dtype,
            low_cpu_mem_usage=False,
            output_loading_info=True,
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{p}: could not load an AutoencoderKL ({err})") from err
    missing = [k for k in info.get("missing_keys", []) if k]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        raise ValueError(
            f"{p}: the weights do not fill the AutoencoderKL of its config ({len(missing)} missing, e.g. "
            f"{(missing or [''])[0]}; {len(mismatched)} of another shape); it would decode with random weights"
        )
    vae.eval().requires_grad_(False)
    if device is not None:
        vae.to(device)
    return vae


@dataclass(frozen=True)
class ImageAdapterConfig:
    """Serialisable settings of an :class:`ImageAdapter`.

    Attributes:
        space: ``"pixels"`` or ``"vae"``.
        vae_path: Local folder of the AutoencoderKL (space ``"vae"``); may be None when a VAE module is
            passed to the adapter directly.
        channels: Image channels C (3 for RGB, 1 for grey).
        sigma_data: Standard deviation of the normalised VAE latents (after :meth:`ImageAdapter.fit_stats`).
        chunk_size: Images per VAE call in encode and decode (bounds memory).
        sample_posterior: Encode to a sample of the VAE posterior instead of its mean.
        vae_dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``: the dtype the VAE runs in.
    """

    space: str = "pixels"
    vae_path: str | None = None
    channels: int = 3
    sigma_data: float = 0.5
    chunk_size: int = 16
    sample_posterior: bool = False
    vae_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.space not in _SPACES:
            raise ValueError(f"ImageAdapterConfig.space must be one of {_SPACES}, got {self.space!r}")
        if self.vae_path is not None:
            object.__setattr__(self, "vae_path", str(self.vae_path))
        if self.space == "pixels" and self.vae_path is not None:
            raise ValueError(f"ImageAdapterConfig.vae_path={self.vae_path!r} needs space='vae'")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"ImageAdapterConfig.channels must be a positive int, got {self.channels!r}")
        if not (isinstance(self.sigma_data, (int, float)) and self.sigma_data > 0):
            raise ValueError(f"ImageAdapterConfig.sigma_data must be positive, got {self.sigma_data!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"ImageAdapterConfig.chunk_size must be a positive int, got {self.chunk_size!r}")
        if self.vae_dtype not in _DTYPES:
            raise ValueError(
                f"ImageAdapterConfig.vae_dtype must be one of {sorted(_DTYPES)}, got {self.vae_dtype!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageAdapterConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError."""
        return config_from_dict(cls, dict(d), source="ImageAdapterConfig.from_dict")


def _chunks(n: int, size: int) -> Iterable[slice]:
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def _state_digest(module: nn.Module) -> str:
    """sha256 of the names, shapes, dtypes and bytes of a module's state (16 hex digits)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class ImageAdapter(Adapter):
    """Images <-> latents, in pixel space or through a local ``AutoencoderKL``.

    ``encode``: uint8 (or [-1, 1] float) images ``[B, H, W, C]`` -> latents ``[B, C', h, w]``; pixel space
    gives ``C' = C, h = H, w = W``, the VAE gives ``C' = latent_channels`` and ``h = H / downsample``.
    ``decode`` inverts it to uint8 images. With the VAE, latents are normalised per channel by statistics
    measured with :meth:`fit_stats` (identity scaling times ``sigma_data`` until fitted).

    Args:
        config: Latent space, VAE folder, sigma_data, chunk size.
        vae: An AutoencoderKL module to use instead of loading ``config.vae_path``.
        mean: Optional per-channel latent mean ``[C']`` (VAE space).
        std: Optional per-channel latent std ``[C']`` (VAE space).

    Raises:
        ValueError: If the VAE is missing, or its channel count differs from ``config.channels``.
    """

    modality = "image"

    def __init__(
        self,
        config: ImageAdapterConfig,
        vae: nn.Module | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.vae: nn.Module | None = None
        self._digest: str | None = None
        if config.space == "vae":
            if vae is None:
                if config.vae_path is None:
                    raise ValueError("space='vae' needs config.vae_path or a vae module")
                vae = load_vae(config.vae_path, dtype=_DTYPES[config.vae_dtype])
            vae.eval().requires_grad_(False)
            if next(vae.parameters()).dtype != _DTYPES[config.vae_dtype]:
                vae.to(_DTYPES[config.vae_dtype])
            vcfg = vae.config
            if int(vcfg.in_channels) != config.channels or int(vcfg.out_channels) != config.channels:
                raise ValueError(
                    f"the VAE maps {vcfg.in_channels} -> {vcfg.out_channels} channels, "
                    f"but config.channels={config.channels}"
                )
            self.vae = vae
        elif vae is not None:
            raise ValueError("a vae module was passed but config.space is 'pixels'")
        c = self.latent_channels
        self.register_buffer("mean", torch.zeros(c))
        self.register_buffer("std", torch.ones(c))
        self.register_buffer("fitted", torch.tensor(False))
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        if mean is not None and std is not None:
            self.set_stats(mean, std)

    # ------------------------------------------------------------------------------- the latent spec
    @property
    def latent_channels(self) -> int:
        """Channels C' of the latents."""
        if self.vae is None:
            return self.config.channels
        return int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        """Spatial downsampling factor of the latents (1 in pixel space)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, height: int | Extent, width: int | None = None) -> tuple[int, int, int]:
        """Latent shape ``(C', h, w)`` of an image of ``height x width`` pixels (or ``Extent(size=...)``).

        Raises:
            ValueError: If the size is not a multiple of :attr:`downsample`.
        """
        if isinstance(height, Extent):
            height, width = height.need("an image adapter", "size")[0]
        if width is None:
            raise ValueError("latent_shape needs (height, width) or an Extent with a size")
        f = self.downsample
        if height < 1 or width < 1 or height % f or width % f:
            raise ValueError(
                f"image size {height}x{width} must be positive multiples of the VAE downsampling {f}"
            )
        return (self.latent_channels, height // f, width // f)

    def encode_known(self, media: torch.Tensor, extent: Extent) -> torch.Tensor:
        """An image ``[H, W, C]`` or ``[B, H, W, C]`` of the extent's size -> latents ``[B, C', h, w]``."""
        h, w = extent.need("an image adapter", "size")[0]
        img = torch.as_tensor(media)
        img = img[None] if img.ndim == 3 else img
        if img.ndim != 4 or tuple(img.shape[1:3]) != (h, w):
            raise ValueError(f"known must be [{h}, {w}, C] or [B, {h}, {w}, C], got {tuple(img.shape)}")
        return self.encode(img.to(self.device))

    def latent_mask(self, mask: torch.Tensor, extent: Extent) -> torch.Tensor:
        """A pixel mask ``[H, W]`` or ``[B, H, W]`` (1 = known) -> ``[B or 1, 1, h, w]``: a latent pixel is
        known only where its whole ``downsample x downsample`` patch is."""
        size = tuple(extent.need("an image mask", "size")[0])
        m = torch.as_tensor(mask, device=self.device).float()
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or tuple(m.shape[1:]) != size:
            raise ValueError(
                f"an image mask must be [{size[0]}, {size[1]}] or [B, ...], got {tuple(m.shape)}"
            )
        r = self.downsample
        return 1 - F.max_pool2d(1 - m[:, None], kernel_size=r, stride=r)  # (B, 1, h, w)

    def image_shape(self, h: int, w: int) -> tuple[int, int]:
        """Pixel size ``(H, W)`` decoded from latents of ``h x w``."""
        return (h * self.downsample, w * self.downsample)

    @property
    def device(self) -> torch.device:
        """The device of the statistics (and of the VAE)."""
        return self.mean.device

    # ------------------------------------------------------------------------------- statistics
    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-channel latent statistics (both ``[C']``, std > 0)."""
        c = self.latent_channels
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != c or std.numel() != c:
            raise ValueError(f"mean and std need {c} values, got {mean.numel()} and {std.numel()}")
        if not bool(torch.all(std > 0)) or not bool(torch.all(torch.isfinite(mean))):
            raise ValueError("std must be positive and mean finite in every latent channel")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)

    @torch.no_grad()
    def fit_stats_latents(self, raw_latents: Iterable[torch.Tensor], min_std: float = 1e-4) -> ImageAdapter:
        """Measure the per-channel mean and std of raw (un-normalised) latents ``[B, C', ...]``.

        Sums are accumulated in float64. Any axes after C' (h, w, or F, h, w for video) are pooled.

        Returns:
            self, with ``mean``, ``std`` set and ``fitted`` True.
        """
        c = self.latent_channels
        count = 0
        s1 = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        for raw in raw_latents:
            if raw.ndim < 2 or raw.shape[1] != c:
                raise ValueError(f"expected raw latents [B, {c}, ...], got shape {tuple(raw.shape)}")
            v = raw.detach().double().cpu().transpose(0, 1).reshape(c, -1)  # (C', B*...)
            count += v.shape[1]
            s1 += v.sum(1)
            s2 += (v * v).sum(1)
        if count < 2:
            raise ValueError("fit_stats needs at least two latent positions")
        mean = s1 / count
        var = (s2 / count - mean * mean).clamp_min(0) * count / (count - 1)
        self.set_stats(mean.float(), var.sqrt().clamp_min(min_std).float())
        return self

    @torch.no_grad()
    def fit_stats(self, images: Iterable[torch.Tensor], min_std: float = 1e-4) -> ImageAdapter:
        """Measure the per-channel latent mean and std on image batches ``[B, H, W, C]``.

        In pixel space this is a no-op: the latents are the pixels in [-1, 1] as they are.

        Returns:
            self.
        """
        if self.vae is None:
            return self
        return self.fit_stats_latents((self.encode_raw(to_pixels(x)) for x in images), min_std=min_std)

    # ------------------------------------------------------------------------------- normalisation
    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw latents ``[B, C', ...]`` -> ``sigma_data * (raw - mean) / std`` (pixel space: unchanged)."""
        if self.vae is None:
            return raw
        shape = (-1,) + (1,) * (raw.ndim - 2)
        mean, std = self.mean.to(raw.device).view(shape), self.std.to(raw.device).view(shape)
        return self.config.sigma_data * (raw.float() - mean) / std

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise`."""
        if self.vae is None:
            return latents
        shape = (-1,) + (1,) * (latents.ndim - 2)
        mean, std = self.mean.to(latents.device).view(shape), self.std.to(latents.device).view(shape)
        return latents.float() / self.config.sigma_data * std + mean

    # ------------------------------------------------------------------------------- encode / decode
    def _check_pixels(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.channels:
            raise ValueError(f"expected pixels [B, {self.config.channels}, H, W], got shape {tuple(x.shape)}")
        self.latent_shape(x.shape[2], x.shape[3])

    @torch.no_grad()
    def encode_raw(
        self,
        pixels: torch.Tensor,
        *,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Pixels ``[B, C, H, W]`` in [-1, 1] -> raw latents ``[B, C', h, w]`` (not normalised), float32.

        The VAE posterior mean, or a sample of it when ``config.sample_posterior`` (drawn with
        ``generator``, chunk after chunk).
        """
        self._check_pixels(pixels)
        if self.vae is None:
            return pixels.float()
        vae, dtype = self.vae, _DTYPES[self.config.vae_dtype]
        size = chunk_size or self.config.chunk_size
        out = []
        for s in _chunks(pixels.shape[0], size):
            x = pixels[s].to(self.device, dtype)  # (b, C, H, W)
            dist = vae.encode(x).latent_dist
            z = dist.sample(generator=generator) if self.config.sample_posterior else dist.mean
            out.append(z.float())  # (b, C', h, w)
        return torch.cat(out)

    def encode_pixels(
        self,
        pixels: torch.Tensor,
        *,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Pixels ``[B, C, H, W]`` in [-1, 1] -> normalised latents ``[B, C', h, w]``."""
        return self.normalise(self.encode_raw(pixels, chunk_size=chunk_size, generator=generator))

    def encode(
        self,
        images: torch.Tensor,
        *,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images ``[B, H, W, C]`` (uint8, or float in [-1, 1]) -> normalised latents ``[B, C', h, w]``."""
        return self.encode_pixels(to_pixels(images), chunk_size=chunk_size, generator=generator)

    @torch.no_grad()
    def decode_pixels(
        self,
        latents: torch.Tensor,
        *,
        chunk_size: int | None = None,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Normalised latents ``[B, C', h, w]`` -> pixels ``[B, C, H, W]`` float32 (not clamped).

        Args:
            latents: The latents.
            chunk_size: Images per VAE call (default ``config.chunk_size``).
            out_device: Where the pixels go, chunk by chunk (default: the latents' device).
        """
        c = self.latent_channels
        if latents.ndim != 4 or latents.shape[1] != c:
            raise ValueError(f"expected latents [B, {c}, h, w], got shape {tuple(latents.shape)}")
        out_device = latents.device if out_device is None else torch.device(out_device)
        raw = self.denormalise(latents)
        if self.vae is None:
            return raw.float().to(out_device)
        vae, dtype = self.vae, _DTYPES[self.config.vae_dtype]
        size = chunk_size or self.config.chunk_size
        out = [
            vae.decode(raw[s].to(self.device, dtype)).sample.float().to(out_device)
            for s in _chunks(raw.shape[0], size)
        ]
        return torch.cat(out)  # (B, C, H, W)

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        extent: Extent | None = None,
        *,
        chunk_size: int | None = None,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Normalised latents ``[B, C', h, w]`` -> uint8 images ``[B, H, W, C]``.

        Each chunk is converted to uint8 (and moved to ``out_device``) before the next is decoded, so
        only one chunk of float pixels exists at a time.
        """
        c = self.latent_channels
        if latents.ndim != 4 or latents.shape[1] != c:
            raise ValueError(f"expected latents [B, {c}, h, w], got shape {tuple(latents.shape)}")
        size = chunk_size or self.config.chunk_size
        out = [
            to_uint8(self.decode_pixels(latents[s], chunk_size=size)).to(
                latents.device if out_device is None else out_device
            )
            for s in _chunks(latents.shape[0], size)
        ]
        return torch.cat(out)  # (B, H, W, C)

    # ------------------------------------------------------------------------------- serialisation
    def vae_digest(self) -> str | None:
        """A hash of the VAE's weights and config (None in pixel space); computed once."""
        if self.vae is None:
            return None
        if self._digest is None:
            # keys starting with "_" (the folder it was loaded from, the diffusers version) are left out
            items = {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}
            vcfg = json.dumps(items, sort_keys=True, default=str)
            self._digest = hashlib.sha256((vcfg + _state_digest(self.vae)).encode()).hexdigest()[:16]
        return self._digest

    def fingerprint(self) -> str:
        """A short hash of everything the raw latents depend on (space, channels, VAE weights, dtype).

        Keys latent caches: the statistics, ``sigma_data`` and ``chunk_size`` are left out, since raw
        latents do not depend on them.
        """
        cfg = self.config
        key = {
            "space": cfg.space,
            "channels": cfg.channels,
            "vae": self.vae_digest(),
            "vae_dtype": cfg.vae_dtype if self.vae is not None else None,
            "sample_posterior": cfg.sample_posterior,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable config, the VAE's digest and the fitted statistics (exact float32 round trip)."""
        d: dict[str, Any] = {"type": "image", **self.config.to_dict()}
        if self.vae is not None:
            d["vae_digest"] = self.vae_digest()
            d["latent_channels"] = self.latent_channels
            d["downsample"] = self.downsample
        if bool(self.fitted):
            d["stats"] = {"mean": self.mean.cpu().tolist(), "std": self.std.cpu().tolist()}
        return d

    def save(self, folder: Path) -> None:
        """The VAE (if any) into ``folder/vae/``, so the pipeline folder stands alone."""
        from multidiff.serialize import save_vae

        save_vae(self, folder)

    @classmethod
    def load(cls, config: dict[str, Any], folder: Path) -> ImageAdapter:
        """Rebuild from :meth:`to_config`, with the VAE :meth:`save` wrote (or the one it names)."""
        from multidiff.serialize import vae_path

        return cls.from_dict(config, vae_path=vae_path(config, folder))

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        vae: nn.Module | None = None,
        *,
        vae_path: str | os.PathLike[str] | None = None,
    ) -> ImageAdapter:
        """Rebuild from :meth:`to_dict` output.

        Args:
            d: The dict.
            vae: A VAE module to use instead of loading one.
            vae_path: Load the VAE from here instead of the recorded ``vae_path`` (e.g. a copy inside a
                checkpoint folder).

        Raises:
            ValueError: If the dict is not an image adapter's, or the VAE's weights differ from those
                the statistics were measured with (both digests are named).
        """
        if "type" in d and d["type"] != "image":
            raise ValueError(f"not an image adapter config: type={d['type']!r}")
        fields = {f.name for f in dataclasses.fields(ImageAdapterConfig)}
        cfg = {k: v for k, v in d.items() if k in fields}
        if vae_path is not None:
            cfg["vae_path"] = str(vae_path)
        config = ImageAdapterConfig.from_dict(cfg)
        mean = torch.tensor(d["stats"]["mean"]) if "stats" in d else None
        std = torch.tensor(d["stats"]["std"]) if "stats" in d else None
        adapter = cls(config, vae, mean, std)
        want = d["vae_digest"] if "vae_digest" in d else None
        if want is not None and adapter.vae_digest() != want:
            raise ValueError(
                f"the VAE loaded from {config.vae_path!r} has digest {adapter.vae_digest()}, but this adapter's "
                f"statistics were measured with the VAE of digest {want}"
            )
        return adapter
