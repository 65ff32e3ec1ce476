"""VideoFolder and ImageFolder: broken and odd files, labels, deterministic clips and crops, the latent cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import multidiff.data.video as video_module
from multidiff.data.common import SkippedFileWarning
from multidiff.data.image import ImageFolder
from multidiff.data.video import VideoFolder
from multidiff.io import read_video, write_image, write_video
from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig, to_pixels


def moving_square(frames: int, height: int, width: int, shade: int = 230) -> np.ndarray:
    clip = np.full((frames, height, width, 3), 10, np.uint8)
    for t in range(frames):
        x = t % (width - 4)
        clip[t, 3:7, x : x + 4] = (shade, 120, 40)
    return clip


BROKEN = {
    "empty.mp4": "empty file (0 bytes)",
    "cut.mp4": "truncated",
    "text.mp4": "not a readable video",
    "short.mp4": "too short: 3 frames",
}


def make_folder(root: Path) -> None:
    """Four usable videos in two label folders (one of odd size) and four broken ones."""
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    write_video(root / "cats" / "a.mp4", moving_square(12, 16, 16), 10)
    write_video(root / "cats" / "b.gif", moving_square(10, 16, 16, 150), 10)
    write_video(root / "dogs" / "c.webm", moving_square(14, 16, 24), 10)
    write_video(root / "dogs" / "odd.gif", moving_square(9, 13, 19), 10)
    (root / "dogs" / "notes.txt").write_text("not considered: wrong extension")
    (root / "cats" / "empty.mp4").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), np.uint8)
    src = write_video(root / "noise.mp4", noise, 12)  # +faststart: a cut file keeps its index
    (root / "cats" / "cut.mp4").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    src.unlink()
    (root / "dogs" / "text.mp4").write_text("hello, I am a text file\n" * 40)
    write_video(root / "dogs" / "short.mp4", moving_square(3, 16, 16), 10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    make_folder(root)
    return root


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        return fn(*args, **kwargs)


def test_broken_files_are_skipped_and_odd_ones_resized(folder) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolder(folder, frames=8, size=16)
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)]
    assert sorted(e.rel for e in ds.entries) == ["cats/a.mp4", "cats/b.gif", "dogs/c.webm", "dogs/odd.gif"]
    assert sorted(Path(p).name for p, _ in ds.skipped) == sorted(BROKEN)
    for name, reason in BROKEN.items():
        (got,) = [r for p, r in ds.skipped if Path(p).name == name]
        assert got.startswith(reason), (name, got)
        assert any(name in m and reason in m for m in messages), name
    assert any("skipped 4 of 8 files" in m for m in messages)
    for i in range(len(ds)):  # every item, odd-sized or not, comes out at the training size
        item = ds[i]
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (8, 16, 16, 3)
    assert ds.classes == ["cats", "dogs"]
    assert {ds[i]["path"]: ds[i]["label"] for i in range(len(ds))} == {
        "cats/a.mp4": 0,
        "cats/b.gif": 0,
        "dogs/c.webm": 1,
        "dogs/odd.gif": 1,
    }


def test_unusable_folders_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        VideoFolder(tmp_path / "nope", frames=4, size=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=rf"video folder {tmp_path / 'empty'} has no usable video file"):
        VideoFolder(tmp_path / "empty", frames=4, size=16)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"")
    with pytest.warns(SkippedFileWarning), pytest.raises(ValueError, match="no usable video file"):
        VideoFolder(tmp_path / "bad", frames=4, size=16)
    with pytest.raises(ValueError, match="fps or stride"):
        VideoFolder(tmp_path / "bad", frames=4, size=16, fps=5, stride=2)
    with pytest.raises(ValueError, match="crop must be one of"):
        VideoFolder(tmp_path / "bad", frames=4, size=16, crop="left")


def test_labels_and_captions_from_metadata(tmp_path) -> None:
    write_video(tmp_path / "one.mp4", moving_square(6, 16, 16), 10)
    write_video(tmp_path / "two.gif", moving_square(6, 16, 16), 10)
    (tmp_path / "metadata.csv").write_text(
        "path,label,caption\none.mp4,run,a square runs\ntwo.gif,walk,a square walks\ngone.mp4,run,lost\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolder(tmp_path, frames=4, size=16)
    assert any("gone.mp4: listed in metadata.csv but not found" in str(w.message) for w in caught)
    assert ds.classes == ["run", "walk"]
    items = [ds[i] for i in range(len(ds))]
    assert [(it["path"], it["label"], it["caption"]) for it in items] == [
        ("one.mp4", 0, "a square runs"),
        ("two.gif", 1, "a square walks"),
    ]


def test_clips_are_deterministic_and_exact(folder) -> None:
    a = quiet(VideoFolder, folder, frames=4, size=16, seed=7)
    b = quiet(VideoFolder, folder, frames=4, size=16, seed=7)
    full, _ = read_video(folder / "cats" / "a.mp4")
    starts = []
    for epoch in range(6):
        start = a.clip_start(0, epoch)
        starts.append(start)
        item = a.get(0, epoch)
        assert item["start"] == start and 0 <= start <= 12 - 4
        assert torch.equal(item["frames"], full[start : start + 4])  # native size: no resampling at all
        assert torch.equal(item["frames"], b.get(0, epoch)["frames"])  # a restarted run sees the same clip
    assert len(set(starts)) > 1  # epochs draw different clips
    a.set_epoch(3)
    assert a[0]["start"] == starts[3]
    first = quiet(VideoFolder, folder, frames=4, size=16, random_clip=False)
    assert all(first.get(i, e)["start"] == 0 for i in range(len(first)) for e in range(3))


def test_frame_rate_and_stride(folder) -> None:
    full, _ = read_video(folder / "cats" / "a.mp4")  # 12 frames at 10 fps
    ds = quiet(VideoFolder, folder, frames=4, size=16, fps=5)
    i = [e.rel for e in ds.entries].index("cats/a.mp4")
    assert ds.entries[i].info.frames == 6
    item = ds.get(i, 1)
    s = item["start"]
    assert torch.equal(item["frames"], full[::2][s : s + 4])
    ds = quiet(VideoFolder, folder, frames=4, size=16, stride=3)
    # 12, 10 and 14 frames give 4, 4 and 5 clip frames; odd.gif's 9 give 3, too short
    assert [e.rel for e in ds.entries] == ["cats/a.mp4", "cats/b.gif", "dogs/c.webm"]
    assert dict((Path(p).name, r) for p, r in ds.skipped)["odd.gif"].startswith(
        "too short: 3 frames at stride 3"
    )
    assert ds.entries[0].info.frames == 4 and ds.get(0)["start"] == 0
    assert torch.equal(ds.get(0)["frames"], full[::3])


def test_random_crops_are_deterministic_and_in_bounds(folder) -> None:
    ds = quiet(VideoFolder, folder, frames=4, size=16, crop="random", seed=1)
    i = [e.rel for e in ds.entries].index("dogs/c.webm")  # 16x24: the crop slides along the width
    full, _ = read_video(folder / "dogs" / "c.webm")
    offsets = set()
    for epoch in range(8):
        oy, ox = ds.crop_offsets(i, epoch)
        assert oy == 0 and 0 <= ox <= 8
        offsets.add(ox)
        item = ds.get(i, epoch)
        s = item["start"]
        assert torch.equal(item["frames"], full[s : s + 4, :, ox : ox + 16])
    assert len(offsets) > 1
    centre = quiet(VideoFolder, folder, frames=4, size=16)
    assert centre.crop_offsets(i, 0) == centre.crop_offsets(i, 5) == (0, 4)


def test_latent_cache(folder, tmp_path, monkeypatch) -> None:
    pixels = ImageAdapter(ImageAdapterConfig())
    cache = tmp_path / "cache"
    ds = quiet(VideoFolder, folder, frames=4, size=16, adapter=pixels, cache_dir=cache)
    for i in range(len(ds)):
        item = ds.get(i, 2)
        assert item["latents"].shape == (3, 4, 16, 16)
        assert torch.equal(item["latents"], to_pixels(item["frames"]).transpose(0, 1))  # [C, F, H, W]
    files = sorted((cache / pixels.fingerprint()).glob("*.safetensors"))
    assert len(files) == len(ds)
    want = ds.get(1, 2)["latents"]
    # a second run reads the cache and never decodes a video
    monkeypatch.setattr(video_module, "read_video", lambda *a, **k: pytest.fail("decoded a cached video"))
    cached = quiet(
        VideoFolder, folder, frames=4, size=16, adapter=pixels, cache_dir=cache, return_frames=False
    )
    assert torch.equal(cached.get(1, 2)["latents"], want) and "frames" not in cached.get(1, 2)
    with pytest.raises(ValueError, match="needs crop='center'"):
        quiet(VideoFolder, folder, frames=4, size=16, crop="random", adapter=pixels, cache_dir=cache)
    with pytest.raises(ValueError, match="cache_dir needs an adapter"):
        quiet(VideoFolder, folder, frames=4, size=16, cache_dir=cache)


def tiny_vae():
    """A small random diffusers AutoencoderKL (4 latent channels, 2x down), the same every time."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        latent_channels=4,
    )


def test_latent_cache_with_a_vae_slices_per_frame_latents(folder, tmp_path) -> None:
    vae = tiny_vae()
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", sigma_data=1.0), vae=vae)
    adapter.set_stats(torch.tensor([0.1, -0.2, 0.0, 0.3]), torch.tensor([1.5, 0.5, 1.0, 2.0]))
    ds = quiet(VideoFolder, folder, frames=4, size=16, adapter=adapter, cache_dir=tmp_path)
    item = ds.get(0, 4)
    assert item["latents"].shape == (4, 4, 8, 8)
    want = adapter.encode(item["frames"]).transpose(0, 1)  # each frame on its own: [C', F, h, w]
    assert torch.allclose(item["latents"], want, atol=1e-5)
    adapter.fit_stats_latents(ds.raw_latents(i)[None] for i in range(len(ds)))  # stats from the cache
    z = torch.cat([adapter.normalise(ds.raw_latents(i)[None]).flatten(2) for i in range(len(ds))], 2)
    assert torch.allclose(z[0].std(1), torch.ones(4), atol=1e-4)


# ------------------------------------------------------------------------------------------------ images


def make_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "red").mkdir(parents=True)
    (root / "blue").mkdir()
    write_image(root / "red" / "a.png", rng.integers(0, 256, (16, 16, 3), np.uint8))
    write_image(root / "red" / "odd.png", rng.integers(0, 256, (13, 19, 3), np.uint8))
    write_image(root / "blue" / "b.jpg", rng.integers(0, 256, (24, 16, 3), np.uint8))
    write_image(root / "blue" / "grey.png", rng.integers(0, 256, (16, 16, 1), np.uint8))
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "blue" / "text.jpg").write_text("no image here")
    big = write_image(root / "big.png", rng.integers(0, 256, (64, 64, 3), np.uint8))
    (root / "red" / "cut.png").write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    big.unlink()


def test_image_folder(tmp_path) -> None:
    make_image_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolder(tmp_path, size=16)
    assert any("skipped 3 of 7 files" in str(w.message) for w in caught)
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["cut.png", "empty.png", "text.jpg"]
    assert dict((Path(p).name, r.split(" (")[0]) for p, r in ds.skipped) == {
        "cut.png": "not a readable image",
        "empty.png": "empty file",
        "text.jpg": "not a readable image",
    }
    assert ds.classes == ["blue", "red"]
    for i in range(len(ds)):
        assert ds[i]["image"].shape == (16, 16, 3) and ds[i]["image"].dtype == torch.uint8
    clips = quiet(ImageFolder, tmp_path, size=16, as_video=True, crop="random", seed=3)
    j = [e.rel for e in clips.entries].index("blue/b.jpg")  # 24x16: the crop slides along the height
    got = {clips.crop_offsets(j, e) for e in range(8)}
    assert all(ox == 0 and 0 <= oy <= 8 for oy, ox in got) and len(got) > 1
    assert clips.get(j, 5)["frames"].shape == (1, 16, 16, 3)
    assert torch.equal(clips.get(j, 5)["frames"], clips.get(j, 5)["frames"])
    pixels = ImageAdapter(ImageAdapterConfig())
    cached = quiet(
        ImageFolder, tmp_path, size=16, as_video=True, adapter=pixels, cache_dir=tmp_path / "cache"
    )
    item = cached[0]
    assert item["latents"].shape == (3, 1, 16, 16)
    assert torch.equal(item["latents"], to_pixels(item["frames"]).transpose(0, 1))


def test_frame_cache_gives_the_same_clips_and_never_decodes_twice(folder, tmp_path, monkeypatch):
    """Items read through the uint8 frame cache equal the decoded ones (random crops and clip starts
    included, odd sizes resized); once the cache is built, no file is decoded again."""
    kw = dict(frames=8, size=16, crop="random", labels="folders", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        plain = VideoFolder(folder, **kw)
        cached = VideoFolder(folder, frame_cache_dir=tmp_path / "frames", **kw)
    cached.build_frame_cache(workers=2, progress=False)
    assert len(list((tmp_path / "frames").glob("*.safetensors"))) == len(cached)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a video although its frames are cached")

    monkeypatch.setattr(cached, "_read", no_decoding)
    for epoch in (0, 1):
        for i in range(len(plain)):
            a, b = plain.get(i, epoch), cached.get(i, epoch)
            assert (a["start"], a["label"]) == (b["start"], b["label"])
            assert b["frames"].dtype == torch.uint8 and b["frames"].shape == (8, 16, 16, 3)
            assert torch.equal(a["frames"], b["frames"]), (i, epoch)


def test_cache_latents_encodes_everything_once_and_leaves_workers_a_cpu_adapter(folder, tmp_path) -> None:
    """Forked loader workers cannot use CUDA: after ``train.cache_latents`` every file is in the cache and the
    dataset holds its own copy of the adapter, on the CPU, with the same statistics (so its items are the
    same as before, and no worker ever encodes)."""
    from multidiff import train

    vae = tiny_vae()
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", sigma_data=0.5), vae=vae)
    adapter.set_stats(torch.tensor([0.1, -0.2, 0.0, 0.3]), torch.tensor([1.5, 0.5, 1.0, 2.0]))
    ds = quiet(
        VideoFolder, folder, frames=4, size=16, adapter=adapter, cache_dir=tmp_path, return_frames=False
    )
    train.cache_latents([ds], is_main=True)
    assert all(ds.cache_path(i).is_file() for i in range(len(ds)))
    assert ds.adapter is not adapter and ds.adapter.mean.device.type == "cpu"
    assert torch.equal(ds.adapter.mean, adapter.mean) and torch.equal(ds.adapter.std, adapter.std)
    want = ds.get(1, 2)["latents"]
    ds.adapter.encode_raw = None  # any encoding from here on would fail: items come from the cache
    assert torch.equal(ds.get(1, 2)["latents"], want)


def test_build_cache_decodes_in_workers_and_calls_the_vae_once_per_batch(folder, tmp_path) -> None:
    """With loader workers decoding the files, the cache holds exactly what decoding here gives; and the
    frames of a batch reach the VAE in one call (the adapter's own chunking, 16 frames, is lifted)."""
    vae = tiny_vae()
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", sigma_data=0.5), vae=vae)
    vae_calls: list[int] = []
    encode = vae.encode

    def counting(x, *a, **kw):
        vae_calls.append(x.shape[0])
        return encode(x, *a, **kw)

    vae.encode = counting
    here = quiet(
        VideoFolder, folder, frames=4, size=16, adapter=adapter, cache_dir=tmp_path / "0", return_frames=False
    )
    here.build_cache()
    total = sum(here.entries[i].info.frames for i in range(len(here)))
    assert total > adapter.config.chunk_size and vae_calls == [total]
    forked = quiet(
        VideoFolder, folder, frames=4, size=16, adapter=adapter, cache_dir=tmp_path / "2", return_frames=False
    )
    forked.build_cache(workers=2)
    for i in range(len(here)):
        assert torch.equal(forked.raw_latents(i), here.raw_latents(i))


def test_build_cache_encodes_files_together_and_matches_encoding_them_one_by_one(folder, tmp_path) -> None:
    """The latent cache encodes the frames of several files in one call (so caching on a GPU is not bound by
    launches and syncs per file); what it stores equals encoding each file alone, for videos of different
    lengths and for images."""
    vae = tiny_vae()
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", sigma_data=0.5), vae=vae)
    calls: list[int] = []
    encode = adapter.encode_raw

    def counting(pixels, **kw):
        calls.append(pixels.shape[0])
        return encode(pixels, **kw)

    adapter.encode_raw = counting
    ds = quiet(
        VideoFolder, folder, frames=4, size=16, adapter=adapter, cache_dir=tmp_path / "v", return_frames=False
    )
    ds.build_cache()
    lengths = [ds.entries[i].info.frames for i in range(len(ds))]
    assert len(set(lengths)) > 1 and len(calls) == 1 and calls[0] == sum(lengths)
    alone = quiet(
        VideoFolder, folder, frames=4, size=16, adapter=adapter, cache_dir=tmp_path / "a", return_frames=False
    )
    for i in range(len(ds)):
        want = alone.raw_latents(i)  # encoded by itself, the per-file path
        assert want.shape == (4, lengths[i], 8, 8)
        torch.testing.assert_close(ds.raw_latents(i), want, rtol=1e-5, atol=1e-5)
    calls.clear()
    ds.build_cache()  # everything cached: nothing decoded or encoded again
    assert calls == []

    images = tmp_path / "images"
    make_image_folder(images)
    ids = quiet(ImageFolder, images, size=16, adapter=adapter, cache_dir=tmp_path / "i")
    ids.build_cache()
    assert calls == [len(ids)]
    one = quiet(ImageFolder, images, size=16, adapter=adapter, cache_dir=tmp_path / "j")
    for i in range(len(ids)):
        torch.testing.assert_close(ids.raw_latents(i), one.raw_latents(i), rtol=1e-5, atol=1e-5)
