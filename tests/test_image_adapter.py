"""ImageAdapter: pixel space exactness, a tiny local AutoencoderKL (parity, chunking, shapes, statistics)."""

from __future__ import annotations

import json

import pytest
import torch
from media_utils import tiny_vae as shared_tiny_vae

from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig, load_vae, to_pixels, to_uint8


def tiny_vae(seed: int = 0):
    return shared_tiny_vae(seed, channels=(8, 16, 16))


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    tiny_vae().save_pretrained(path)
    return path


def images(n: int, h: int = 16, w: int = 24, seed: int = 0) -> torch.Tensor:
    """Gradients plus squares: [n, h, w, 3] uint8."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h)[:, None, None]
    xx = torch.linspace(0, 1, w)[None, :, None]
    out = []
    for _ in range(n):
        colour = torch.rand(3, generator=g)
        img = 0.6 * (yy * colour + xx * (1 - colour))
        y, x = torch.randint(0, h - 6, (2,), generator=g)
        img[y : y + 6, x : x + 6] = torch.rand(3, generator=g)
        out.append((img * 255).round().to(torch.uint8))
    return torch.stack(out)


def test_uint8_pixel_conversion_is_exact() -> None:
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(2, 16, 16, 3)
    x = to_pixels(u)
    assert x.shape == (2, 3, 16, 16) and x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8(x), u)
    clamped = to_uint8(torch.tensor([-3.0, 7.0]).view(1, 1, 2))  # [C, H, W] = [1, 1, 2]
    assert torch.equal(clamped, torch.tensor([[[0], [255]]], dtype=torch.uint8))  # [H, W, C]


def test_float_pictures_outside_minus_one_to_one_are_refused() -> None:
    pic = torch.full((4, 4, 3), 200.0)  # a 0..255 picture in a float tensor: white after a clamp before
    with pytest.raises(ValueError, match="float pixels must lie in \\[-1, 1\\], got values up to 200"):
        to_pixels(pic)
    assert torch.equal(to_pixels(pic / 255 * 2 - 1), (pic / 255 * 2 - 1).movedim(-1, -3))


def test_pixel_space_is_exact() -> None:
    adapter = ImageAdapter(ImageAdapterConfig())
    x = images(3, 10, 14)
    z = adapter.encode(x)
    assert z.shape == (3, 3, 10, 14) == (3, *adapter.latent_shape(10, 14))
    assert torch.allclose(z, x.permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert torch.equal(adapter.decode(z), x)
    assert adapter.fit_stats([x]) is adapter and not bool(adapter.fitted)  # pixels stay in [-1, 1]
    again = ImageAdapter.from_dict(json.loads(json.dumps(adapter.to_dict())))
    assert torch.equal(again.decode(again.encode(x)), x)


def test_vae_latents_match_diffusers(vae_dir) -> None:
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir), sigma_data=1.0))
    assert adapter.latent_shape(16, 24) == (4, 4, 6) and adapter.downsample == 4
    with pytest.raises(ValueError, match="multiples of the VAE downsampling 4"):
        adapter.latent_shape(18, 24)
    reference = tiny_vae()
    x = to_pixels(images(5))
    with torch.no_grad():
        want = reference.encode(x).latent_dist.mean
        pixels = reference.decode(want).sample
    raw = adapter.encode_raw(x)
    assert raw.shape == (5, 4, 4, 6)
    assert torch.allclose(raw, want, atol=1e-6)
    # unfitted statistics: z = sigma_data * raw
    assert torch.allclose(adapter.encode_pixels(x), raw)
    assert torch.allclose(adapter.decode_pixels(adapter.encode_pixels(x)), pixels, atol=1e-5)
    out = adapter.decode(adapter.encode(images(5)))
    assert out.dtype == torch.uint8 and out.shape == (5, 16, 24, 3)


def test_chunked_equals_unchunked(vae_dir) -> None:
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir), chunk_size=2))
    x = images(5)
    calls: list[int] = []
    encode = adapter.vae.encode
    adapter.vae.encode = lambda t: calls.append(t.shape[0]) or encode(t)
    z_chunked = adapter.encode(x)
    assert calls == [2, 2, 1]
    z_whole = adapter.encode(x, chunk_size=64)
    assert torch.allclose(z_chunked, z_whole, atol=1e-5)
    assert torch.allclose(
        adapter.decode_pixels(z_whole, chunk_size=3), adapter.decode_pixels(z_whole, chunk_size=64), atol=1e-5
    )
    a, b = adapter.decode(z_whole, chunk_size=1), adapter.decode(z_whole, chunk_size=64)
    assert (a.int() - b.int()).abs().max() <= 1  # rounding of values within 1e-5 of a half step


def test_fitted_statistics_normalise_each_channel(vae_dir) -> None:
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir), sigma_data=1.0))
    data = images(12, seed=3)
    adapter.fit_stats([data[:5], data[5:]])  # two batches, one statistic
    raw = adapter.encode_raw(to_pixels(data))  # (B, C', h, w)
    per_channel = raw.transpose(0, 1).reshape(4, -1)
    assert torch.allclose(adapter.mean, per_channel.mean(1), atol=1e-5)
    assert torch.allclose(adapter.std, per_channel.std(1), atol=1e-5)
    z = adapter.encode(data).transpose(0, 1).reshape(4, -1)
    assert torch.allclose(z.mean(1), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(1), torch.ones(4), atol=1e-4)  # unit std with sigma_data = 1
    half = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir), sigma_data=0.5))
    half.set_stats(adapter.mean, adapter.std)
    assert torch.allclose(half.encode(data), 0.5 * adapter.encode(data), atol=1e-6)
    # decoding inverts the normalisation
    with torch.no_grad():
        want = adapter.vae.decode(raw).sample
    assert torch.allclose(adapter.decode_pixels(adapter.encode(data)), want, atol=1e-5)


def test_serialisation_and_vae_identity(vae_dir, tmp_path) -> None:
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir)))
    adapter.fit_stats([images(6)])
    d = json.loads(json.dumps(adapter.to_dict()))
    assert d["type"] == "image" and d["latent_channels"] == 4 and d["downsample"] == 4
    again = ImageAdapter.from_dict(d)
    x = images(2, seed=9)
    assert torch.equal(again.encode(x), adapter.encode(x))
    assert again.fingerprint() == adapter.fingerprint()
    copy = tmp_path / "copy"
    load_vae(vae_dir).save_pretrained(copy)
    assert ImageAdapter.from_dict(d, vae_path=copy).fingerprint() == adapter.fingerprint()  # same weights
    other = tmp_path / "other"
    tiny_vae(seed=1).save_pretrained(other)
    with pytest.raises(ValueError, match="statistics were measured with the VAE of digest"):
        ImageAdapter.from_dict(d, vae_path=other)
    other_adapter = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(other)))
    assert other_adapter.fingerprint() != adapter.fingerprint()
    assert ImageAdapter(ImageAdapterConfig()).fingerprint() != adapter.fingerprint()


def test_posterior_sampling_is_seeded(vae_dir) -> None:
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir), sample_posterior=True))
    x = images(3)
    a = adapter.encode(x, generator=torch.Generator().manual_seed(0))
    b = adapter.encode(x, generator=torch.Generator().manual_seed(0))
    c = adapter.encode(x, generator=torch.Generator().manual_seed(1))
    mean = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir)), vae=adapter.vae).encode(x)
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, mean)


def test_bad_configs_and_folders(tmp_path) -> None:
    with pytest.raises(ValueError, match="space must be one of"):
        ImageAdapterConfig(space="latent")
    with pytest.raises(ValueError, match="needs space='vae'"):
        ImageAdapterConfig(vae_path="x")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        ImageAdapterConfig(chunk_size=0)
    with pytest.raises(ValueError, match="needs config.vae_path or a vae module"):
        ImageAdapter(ImageAdapterConfig(space="vae"))
    # a hub name is not a local folder: refused, nothing is downloaded
    with pytest.raises(ValueError, match="does not exist"):
        ImageAdapter(ImageAdapterConfig(space="vae", vae_path="stabilityai/sd-vae-ft-mse"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_vae(tmp_path / "empty")
    with pytest.raises(ValueError, match="channels"):
        ImageAdapter(ImageAdapterConfig(space="vae", channels=1), vae=tiny_vae())
    with pytest.raises(ValueError, match=r"expected pixels \[B, 3, H, W\]"):
        ImageAdapter(ImageAdapterConfig()).encode_pixels(torch.zeros(2, 1, 8, 8))


def test_a_temporal_decoder_vae_is_refused_not_loaded_half_initialised(tmp_path) -> None:
    """Stable Video Diffusion's AutoencoderKLTemporalDecoder used to load as an AutoencoderKL with a randomly
    initialised decoder (diffusers only warned); it is refused, naming the class. Weights that do not fill
    the config are refused too."""
    from diffusers import AutoencoderKLTemporalDecoder

    torch.manual_seed(0)
    AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2, layers_per_block=1,
        latent_channels=4,
    ).save_pretrained(tmp_path / "svd_vae")  # fmt: skip
    with pytest.raises(ValueError, match="holds a AutoencoderKLTemporalDecoder, not an AutoencoderKL"):
        load_vae(tmp_path / "svd_vae")
    good = tmp_path / "vae"
    tiny_vae().save_pretrained(good)
    cfg = json.loads((good / "config.json").read_text())
    cfg["layers_per_block"] = 2  # the weights no longer fill the model this config builds
    (good / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="the weights do not fill the AutoencoderKL"):
        load_vae(good)
