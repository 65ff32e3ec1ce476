"""VideoAdapter: per-frame latents [B, C', F, h, w], pixel-space exactness, chunked decoding, statistics."""

from __future__ import annotations

import json

import pytest
import torch
from media_utils import tiny_vae

from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
from multidiff.modalities.video import VideoAdapter


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    tiny_vae().save_pretrained(path)
    return path


def moving_squares(b: int, f: int, h: int = 8, w: int = 12) -> torch.Tensor:
    """[b, f, h, w, 3] uint8: video i has a square moving right by one pixel per frame."""
    v = torch.full((b, f, h, w, 3), 20, dtype=torch.uint8)
    for i in range(b):
        for t in range(f):
            x = (t + i) % (w - 3)
            v[i, t, 2:5, x : x + 3] = torch.tensor([230, 90 + 40 * i, 30], dtype=torch.uint8)
    return v


def test_pixel_space_round_trip_is_exact() -> None:
    adapter = VideoAdapter(ImageAdapter(ImageAdapterConfig()))
    video = moving_squares(2, 5)
    z = adapter.encode(video)
    assert z.shape == (2, 3, 5, 8, 12) and tuple(z.shape[1:]) == adapter.latent_shape(5, 8, 12)
    assert torch.allclose(z, video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1)  # [B, C, F, H, W]
    assert torch.equal(adapter.decode(z), video)
    assert torch.equal(adapter.decode(adapter.encode_pixels(z)), video)
    again = VideoAdapter.from_dict(json.loads(json.dumps(adapter.to_dict())))
    assert torch.equal(again.decode(again.encode(video)), video)


def test_vae_latents_are_per_frame_image_latents(vae_dir) -> None:
    image = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir)))
    adapter = VideoAdapter(image, chunk_frames=3)
    video = moving_squares(2, 5)
    z = adapter.encode(video)
    assert z.shape == (2, 4, 5, 4, 6) and tuple(z.shape[1:]) == adapter.latent_shape(5, 8, 12)
    for t in range(5):  # frame t of the latents is the image latent of frame t
        assert torch.allclose(z[:, :, t], image.encode(video[:, t]), atol=1e-5)
    frames = adapter.decode(z)
    assert frames.dtype == torch.uint8 and frames.shape == video.shape
    assert torch.equal(frames[1, 2], image.decode(z[1:2, :, 2])[0])
    with pytest.raises(ValueError, match="must be positive multiples"):
        adapter.latent_shape(5, 9, 12)
    with pytest.raises(ValueError, match=r"expected latents \[B, 4, F, h, w\]"):
        adapter.decode(z[:, :3])
    with pytest.raises(ValueError, match=r"expected frames \[B, F, H, W, 3\]"):
        adapter.encode(video[0])


def test_decoding_is_chunked_and_chunking_does_not_change_the_result(vae_dir) -> None:
    adapter = VideoAdapter(
        ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(vae_dir))), chunk_frames=4
    )
    video = moving_squares(2, 5)
    z = adapter.encode(video)
    sizes: list[int] = []
    decode = adapter.image.vae.decode
    adapter.image.vae.decode = lambda t: sizes.append(t.shape[0]) or decode(t)
    chunked = adapter.decode_pixels(z)
    assert sizes == [4, 4, 2]  # B*F = 10 frames, never more than 4 at once
    sizes.clear()
    adapter.decode(z, chunk_frames=3, out_device="cpu")
    assert max(sizes) == 3 and sum(sizes) == 10
    whole = adapter.decode_pixels(z, chunk_frames=100)
    assert torch.allclose(chunked, whole, atol=1e-5)
    assert torch.allclose(
        adapter.encode(video), VideoAdapter(adapter.image, chunk_frames=1).encode(video), atol=1e-5
    )


def test_statistics_give_sigma_data_per_channel(vae_dir) -> None:
    cfg = ImageAdapterConfig(space="vae", vae_path=str(vae_dir), sigma_data=1.0)
    adapter = VideoAdapter.from_config(cfg, chunk_frames=4)
    videos = moving_squares(3, 6)
    adapter.fit_stats([videos[:2], videos[2:]])
    z = adapter.encode(videos).transpose(0, 1).reshape(4, -1)  # (C', B*F*h*w)
    assert torch.allclose(z.mean(1), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(1), torch.ones(4), atol=1e-4)
    # the same statistics from raw latents (as read from a latent cache)
    other = VideoAdapter.from_config(cfg).fit_stats_latents([adapter.encode_raw(videos)])
    assert torch.allclose(other.image.mean, adapter.image.mean, atol=1e-6)
    assert torch.allclose(other.image.std, adapter.image.std, atol=1e-6)
    again = VideoAdapter.from_dict(json.loads(json.dumps(adapter.to_dict())))
    assert again.chunk_frames == 4 and torch.equal(again.encode(videos), adapter.encode(videos))
