"""The adapter interface (``multidiff.modalities.base``): every modality's adapter implements it, and the
contract holds for each: encode gives the latent shape of the media's extent, a known-media mask maps to a
latent mask of that shape that is never more optimistic than the media mask, normalisation inverts, and
decode returns media of the extent."""

from __future__ import annotations

import math

import pytest
import torch
from media_utils import tiny_vae as shared_tiny_vae

from multidiff.modalities.audio import MelAdapter, MelAdapterConfig, MelSpec
from multidiff.modalities.base import Adapter, Extent
from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
from multidiff.modalities.video import VideoAdapter

SPEC = MelSpec(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=16, fmax=4000.0, edge_pad=96
)


def tiny_vae(seed: int = 0):
    return shared_tiny_vae(seed, channels=(8, 8))


def _audio() -> tuple[Adapter, torch.Tensor, Extent, torch.Tensor]:
    t = torch.arange(4000) / 8000
    wave = (0.3 * torch.sin(2 * math.pi * 440 * t))[None, None].expand(2, 1, -1).contiguous()  # (2, 1, N)
    a = MelAdapter(MelAdapterConfig(spec=SPEC)).fit_stats([wave])
    mask = torch.zeros(4000)
    mask[:2000] = 1  # the first half is known
    return a, wave, Extent(seconds=0.5), mask


def _image(vae: bool) -> tuple[Adapter, torch.Tensor, Extent, torch.Tensor]:
    cfg = ImageAdapterConfig(space="vae", sigma_data=0.5) if vae else ImageAdapterConfig(space="pixels")
    a = ImageAdapter(cfg, vae=tiny_vae() if vae else None)
    images = torch.randint(0, 256, (2, 8, 12, 3), dtype=torch.uint8)
    if vae:
        a.fit_stats([images])
    mask = torch.zeros(8, 12)
    mask[:, :5] = 1  # the left 5 columns are known
    return a, images, Extent(size=(8, 12)), mask


def _video() -> tuple[Adapter, torch.Tensor, Extent, torch.Tensor]:
    a = VideoAdapter.from_config(ImageAdapterConfig(space="pixels"))
    frames = torch.randint(0, 256, (2, 5, 8, 8, 3), dtype=torch.uint8)
    return a, frames, Extent(frames=5, size=8), torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])  # first two known


CASES = {
    "audio": _audio,
    "image-pixels": lambda: _image(False),
    "image-vae": lambda: _image(True),
    "video": _video,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_adapter_keeps_the_contract(name: str) -> None:
    adapter, media, extent, mask = CASES[name]()
    assert isinstance(adapter, Adapter) and adapter.modality in ("audio", "image", "video")
    with torch.no_grad():
        z = adapter.encode(media)
        assert tuple(z.shape[1:]) == adapter.latent_shape(extent)
        # normalisation once, and invertible
        assert torch.allclose(adapter.denormalise(adapter.normalise(z)), z, atol=1e-5)
        # the latent mask: latent-shaped, all/none known map to all/none, and partial knowledge is conservative
        lm = adapter.latent_mask(mask, extent)
        torch.broadcast_shapes(lm.shape, z.shape)
        assert set(lm.unique().tolist()) <= {0.0, 1.0} and 0 < float(lm.mean()) < 1
        assert float(adapter.latent_mask(torch.ones_like(mask), extent).min()) == 1.0
        assert float(adapter.latent_mask(torch.zeros_like(mask), extent).max()) == 0.0
        # decode gives media of the extent
        out = adapter.decode(z, extent)
        assert out.shape == media.shape
        if name in ("image-pixels", "video"):
            assert torch.equal(out, media)  # pixel space is exact


def test_the_latent_mask_marks_only_latents_whose_media_is_all_known() -> None:
    adapter, _, extent, mask = _image(vae=True)  # downsampling 2: a latent pixel covers 2 x 2 pixels
    lm = adapter.latent_mask(mask, extent)  # mask: columns 0-4 known
    assert lm.shape == (1, 1, 4, 6)
    assert lm[0, 0, :, :2].eq(1).all() and lm[0, 0, :, 2:].eq(0).all()  # column pair (4, 5) is half unknown


def test_extent_is_checked_and_each_adapter_names_what_it_lacks() -> None:
    with pytest.raises(ValueError, match="seconds"):
        Extent(seconds=0)
    with pytest.raises(ValueError, match="frames"):
        Extent(frames=0)
    with pytest.raises(ValueError, match="size"):
        Extent(size=(4, 0))
    assert Extent(size=16).size == (16, 16)
    audio = _audio()[0]
    with pytest.raises(ValueError, match="a mel adapter needs seconds"):
        audio.latent_shape(Extent(frames=3))
    video = _video()[0]
    with pytest.raises(ValueError, match="needs size"):
        video.latent_shape(Extent(frames=3))


def test_every_pipeline_takes_the_interface_form_of_generate(tmp_path) -> None:
    """``pipe.generate(num, Extent(...))`` works for whichever pipeline a folder holds (audio, video, image),
    the same as each modality's positional form."""
    from multidiff.core.denoiser import Denoiser
    from multidiff.nn.unet import UNet, UNetConfig
    from multidiff.pipeline import AudioPipeline, ImagePipeline, VideoPipeline

    def unet(ch: int, video: bool = False, cond: int = 0) -> Denoiser:
        cfg = UNetConfig(in_channels=ch, channels=(8, 16), num_res_blocks=1, attention_levels=(), head_dim=8,
                         norm_groups=4, emb_dim=16, noise_freq_dim=8, video=video, cond_channels=cond)  # fmt: skip
        return Denoiser(UNet(cfg), "edm")

    audio = AudioPipeline(unet(1), _audio()[0])
    video = VideoPipeline(unet(3, video=True, cond=4), _video()[0], size=8, window=3)
    image = ImagePipeline(unet(3), _image(False)[0], size=(8, 12))
    cases = [(audio, Extent(seconds=0.25), (0.25,)), (video, Extent(frames=3), (3,)), (image, Extent(), ())]
    for pipe, extent, positional in cases:
        a = pipe.generate(2, extent, steps=2, seed=0, progress=False)
        b = pipe.generate(2, *positional, steps=2, seed=0, progress=False)
        assert torch.equal(a, b)
