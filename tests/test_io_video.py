"""Video and image I/O: round trips (frame count, size, fps, content), resampling, errors, atomic writes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multidiff.io import (
    ImageFileError,
    MediaNotFoundError,
    VideoFileError,
    num_resampled_frames,
    probe_image,
    probe_video,
    read_image,
    read_video,
    source_frame_index,
    write_audio,
    write_image,
    write_video,
)


def moving_square(frames: int, height: int, width: int, side: int = 6) -> np.ndarray:
    """A bright square moving one pixel right and down per frame on a dark background: [F, H, W, 3]."""
    clip = np.full((frames, height, width, 3), 16, np.uint8)
    for t in range(frames):
        y, x = t % (height - side), (2 * t) % (width - side)
        clip[t, y : y + side, x : x + side] = (235, 200, 40)
    return clip


@pytest.fixture
def no_ffmpeg(monkeypatch):
    """imageio_ffmpeg made unimportable, as on machines without it."""
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)


def gif_delays_ms(path) -> list[int]:
    from PIL import Image

    with Image.open(path) as im:
        return [im.seek(k) or im.info["duration"] for k in range(im.n_frames)]


def square_centre(frame: np.ndarray) -> tuple[float, float]:
    mask = frame.astype(int).sum(-1) > 300
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".avi"])
def test_ffmpeg_round_trip(tmp_path, ext) -> None:
    clip = moving_square(12, 32, 48)
    path = write_video(tmp_path / f"clip{ext}", clip, 12.5)
    info = probe_video(path)
    assert (info.frames, info.height, info.width) == (12, 32, 48)
    assert info.fps == pytest.approx(12.5)
    assert info.announced_frames == 12
    frames, fps = read_video(path)
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (12, 32, 48, 3)
    assert fps == pytest.approx(12.5)
    err = np.abs(frames.numpy().astype(int) - clip.astype(int))
    assert err.mean() < 4.0
    for t in range(12):  # the square is where it was drawn, in every frame
        assert square_centre(frames[t].numpy()) == pytest.approx(square_centre(clip[t]), abs=0.6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"clip{ext}"]  # no temporary file left


def test_gif_round_trip_is_exact(tmp_path) -> None:
    clip = moving_square(9, 21, 33)  # odd sizes are fine for GIF
    path = write_video(tmp_path / "clip.gif", clip, 10)
    frames, fps = read_video(path)
    assert fps == pytest.approx(10.0)
    assert torch.equal(frames, torch.from_numpy(clip))  # three colours: the palette is exact
    info = probe_video(path)
    assert (info.frames, info.height, info.width, info.codec) == (9, 21, 33, "gif")


def test_gif_keeps_static_frames_and_rates_in_centiseconds(tmp_path) -> None:
    clip = np.zeros((30, 8, 8, 3), np.uint8)
    clip[10:] = 200  # long runs of identical frames must not be merged
    frames, fps = read_video(write_video(tmp_path / "steps.gif", clip, 30))
    assert frames.shape[0] == 30
    assert fps == pytest.approx(30.0)  # delays of 3 and 4 centiseconds averaging 1/30 s
    assert torch.equal(frames, torch.from_numpy(clip))


def test_gif_with_uneven_delays_is_read_at_a_constant_rate(tmp_path) -> None:
    import imageio.v3 as iio

    clip = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 80, 160)])
    iio.imwrite(tmp_path / "vfr.gif", clip, duration=[100, 200, 100], loop=0)
    frames, fps = read_video(tmp_path / "vfr.gif")
    assert fps == pytest.approx(10.0)  # the rate of the shortest delay
    assert [int(f[0, 0, 0]) for f in frames] == [0, 80, 80, 160]  # the 200 ms frame shown twice


def test_gif_is_written_without_ffmpeg(tmp_path, no_ffmpeg) -> None:
    with pytest.raises(ImportError):
        write_video(tmp_path / "clip.mp4", moving_square(3, 16, 16), 10)  # the patch is in force
    clip = moving_square(11, 19, 27)
    path = write_video(tmp_path / "clip.gif", torch.from_numpy(clip), 12.5)
    frames, fps = read_video(path)
    assert tuple(frames.shape) == (11, 19, 27, 3) and fps == pytest.approx(12.5)
    assert torch.equal(frames, torch.from_numpy(clip))
    info = probe_video(path)
    assert (info.frames, info.height, info.width, info.codec) == (11, 19, 27, "gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif"]  # no temporary file left


def test_gif_keeps_identical_consecutive_frames(tmp_path, no_ffmpeg) -> None:
    # pillow's save_all would merge the repeats into longer frames: 5 frames instead of 9
    clip = np.stack([moving_square(6, 16, 16)[t] for t in (0, 0, 1, 2, 2, 2, 3, 4, 4)])
    path = write_video(tmp_path / "pauses.gif", clip, 8)
    assert gif_delays_ms(path) == [130, 120, 130, 120, 130, 120, 130, 120, 130]  # rounded cumulatively
    frames, fps = read_video(path)
    assert fps == pytest.approx(8.0, rel=0.01)  # 9 frames last 113 centiseconds, not 112.5
    assert torch.equal(frames, torch.from_numpy(clip))
    (single,) = read_video(write_video(tmp_path / "one.gif", clip[:1], 8))[0]  # one frame works too
    assert torch.equal(single, torch.from_numpy(clip[0]))


def test_gif_colours(tmp_path, no_ffmpeg) -> None:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (256, 3), np.uint8)
    clip = palette[rng.integers(0, 256, (5, 24, 40))]  # 256 colours in all, scattered
    frames, _ = read_video(write_video(tmp_path / "c256.gif", clip, 10))
    assert torch.equal(frames, torch.from_numpy(clip))
    # every frame has its own palette: 600 colours in the clip, 200 in each frame, still exact
    clip = rng.integers(0, 256, (600, 3), np.uint8).reshape(3, 200, 3)[:, rng.integers(0, 200, (10, 30))]
    assert len(np.unique(clip.reshape(-1, 3), axis=0)) > 256
    frames, _ = read_video(write_video(tmp_path / "c600.gif", clip, 10))
    assert torch.equal(frames, torch.from_numpy(clip))
    # more than 256 colours in a frame: quantised to 256 per frame, without dithering, close
    y, x = np.mgrid[:64, :64]
    clip = np.stack([np.stack([4 * x, 4 * y, (x + y + 9 * t) % 256], -1) for t in range(4)]).astype(np.uint8)
    frames, fps = read_video(write_video(tmp_path / "smooth.gif", clip, 10))
    assert tuple(frames.shape) == (4, 64, 64, 3) and fps == pytest.approx(10.0)
    err = np.abs(frames.numpy().astype(int) - clip)
    assert err.mean() < 5.0 and err.max() <= 32
    assert all(len(np.unique(f.reshape(-1, 3), axis=0)) <= 256 for f in frames.numpy())


def test_gif_rates(tmp_path, no_ffmpeg) -> None:
    clip = moving_square(6, 16, 16)
    _, fps = read_video(write_video(tmp_path / "fast.gif", clip, 60))
    assert fps == pytest.approx(50.0)  # 1-centisecond delays would be shown for 100 ms: capped
    assert gif_delays_ms(tmp_path / "fast.gif") == [20] * 6
    _, fps = read_video(write_video(tmp_path / "slow.gif", clip, 0.5))
    assert fps == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"tiny.gif.*at most 655.35 s"):
        write_video(tmp_path / "tiny.gif", clip, 0.001)


def test_gif_write_is_atomic(tmp_path, monkeypatch, no_ffmpeg) -> None:
    dest = write_video(tmp_path / "keep.gif", moving_square(3, 16, 16), 10)
    before = dest.read_bytes()

    def half_then_fail(self, data):
        Path.write_text(self, "half a gif")
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_video(dest, moving_square(5, 16, 16), 10)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.gif"]


def test_odd_sizes_are_padded_for_h264(tmp_path) -> None:
    clip = moving_square(4, 31, 45)
    frames, _ = read_video(write_video(tmp_path / "odd.mp4", clip, 8))
    assert tuple(frames.shape) == (4, 32, 46, 3)
    assert np.abs(frames[:, :31, :45].numpy().astype(int) - clip).mean() < 4.0
    # the padding repeats the last row and column
    assert np.abs(frames[:, 31].numpy().astype(int) - frames[:, 30].numpy().astype(int)).mean() < 4.0
    with pytest.raises(ValueError, match=r"odd2.mp4.*even height and width, got 31x45"):
        write_video(tmp_path / "odd2.mp4", clip, 8, pad_odd=False)


def test_resampling_matches_the_full_decode(tmp_path) -> None:
    path = write_video(tmp_path / "c.mp4", moving_square(20, 16, 32), 10)
    full, _ = read_video(path)
    half, fps = read_video(path, fps=5)
    assert fps == 5.0 and torch.equal(half, full[::2])
    up, fps = read_video(path, fps=25, start=3, max_frames=7)
    idx = [int(np.floor(j * 10 / 25 + 1e-9)) for j in range(3, 10)]  # frame on screen at time j / 25
    assert fps == 25.0 and torch.equal(up, full[idx])
    strided, fps = read_video(path, stride=3, start=1)
    assert fps == pytest.approx(10 / 3) and torch.equal(strided, full[3::3])
    clip, _ = read_video(path, start=5, max_frames=4)
    assert torch.equal(clip, full[5:9])
    with pytest.raises(VideoFileError, match="no frame at or after output frame 20"):
        read_video(path, start=20)
    with pytest.raises(ValueError, match="fps or stride"):
        read_video(path, fps=5, stride=2)


def test_resampled_frame_counts() -> None:
    assert num_resampled_frames(20, 10, fps=5) == 10
    assert num_resampled_frames(20, 10, fps=25) == 50
    assert num_resampled_frames(20, 12.5, fps=10) == 16  # j * 1.25 < 20
    assert num_resampled_frames(20, 30, stride=3) == 7
    assert num_resampled_frames(20, 30) == 20
    assert num_resampled_frames(0, 30, fps=10) == 0
    for n, src, fps in [(17, 29.97, 8), (5, 24, 30), (100, 24, 10)]:
        k = num_resampled_frames(n, src, fps=fps)
        assert source_frame_index(k - 1, src, fps=fps) < n <= source_frame_index(k, src, fps=fps)


def test_unreadable_videos_raise_named_errors(tmp_path) -> None:
    with pytest.raises(MediaNotFoundError, match="missing.mp4: file not found") as err:
        read_video(tmp_path / "missing.mp4")
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoFileError, match=r"empty.mp4: empty file"):
        probe_video(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("definitely not a video\n" * 50)
    with pytest.raises(VideoFileError, match=r"text.mp4: not a readable video"):
        read_video(tmp_path / "text.mp4")
    write_audio(tmp_path / "sound.wav", torch.zeros(1, 8000), 16000)
    (tmp_path / "sound.wav").rename(tmp_path / "sound.mp4")  # audio only: no video stream
    with pytest.raises(VideoFileError, match="sound.mp4"):
        probe_video(tmp_path / "sound.mp4")
    write_image(tmp_path / "still.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "still.png").rename(tmp_path / "still.mp4")
    with pytest.raises(VideoFileError, match=r"still.mp4: not a video: a single still image \(png\)"):
        probe_video(tmp_path / "still.mp4")
    data = write_video(
        tmp_path / "long.mp4", np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), np.uint8), 12
    )
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    info = probe_video(cut)  # +faststart: the index survives, half the frames do not
    assert info.announced_frames == 24 and 0 < info.frames < 20


def test_write_video_is_atomic(tmp_path, monkeypatch) -> None:
    import imageio_ffmpeg

    dest = tmp_path / "keep.mp4"
    write_video(dest, moving_square(3, 16, 16), 10)
    before = dest.read_bytes()
    real = imageio_ffmpeg.write_frames

    def failing(*args, **kwargs):
        gen = real(*args, **kwargs)

        def wrapper():
            try:
                yield gen.send(None)
                gen.send((yield))  # one frame goes through, then the disk fills up
                raise RuntimeError("disk full")
            finally:
                gen.close()  # ends ffmpeg, as imageio-ffmpeg does on errors

        return wrapper()

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(dest, moving_square(5, 16, 16), 10)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]
    with pytest.raises(ValueError, match=r"clip.mpg.*unsupported extension"):
        write_video(tmp_path / "clip.mpg", moving_square(3, 16, 16), 10)
    with pytest.raises(ValueError, match="must be uint8"):
        write_video(tmp_path / "f.mp4", moving_square(3, 16, 16).astype(np.float32), 10)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        write_video(tmp_path / "f.mp4", moving_square(3, 16, 16), 0)


def test_image_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (13, 17, 3), np.uint8)
    write_image(tmp_path / "a.png", image)
    assert torch.equal(read_image(tmp_path / "a.png"), torch.from_numpy(image))
    info = probe_image(tmp_path / "a.png")
    assert (info.height, info.width, info.format) == (13, 17, "PNG")
    smooth = np.broadcast_to(np.linspace(0, 255, 32)[None, :, None], (24, 32, 3)).astype(np.uint8)
    write_image(tmp_path / "b.jpg", smooth, quality=95)
    back = read_image(tmp_path / "b.jpg")
    assert back.shape == (24, 32, 3) and np.abs(back.numpy().astype(int) - smooth).mean() < 2.0
    grey = rng.integers(0, 256, (8, 9, 1), np.uint8)
    write_image(tmp_path / "g.png", grey)
    assert torch.equal(read_image(tmp_path / "g.png"), torch.from_numpy(np.repeat(grey, 3, -1)))
    assert torch.equal(read_image(tmp_path / "g.png", mode="L"), torch.from_numpy(grey))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "g.png"]


def test_unreadable_images_raise_named_errors(tmp_path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageFileError, match="empty.png: empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageFileError, match="text.png: not a readable image"):
        read_image(tmp_path / "text.png")
    full = write_image(
        tmp_path / "full.png", np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    )
    (tmp_path / "cut.png").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageFileError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(MediaNotFoundError):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match=r"x.tif.*unsupported extension"):
        write_image(tmp_path / "x.tif", np.zeros((4, 4, 3), np.uint8))


def test_images_of_every_bit_depth_and_mode_read_right(tmp_path) -> None:
    """16-bit grey (the case that read as solid white), 32-bit and float greys are scaled by their range;
    palettes expand; transparency is composited on black (RGB, L) or kept (RGBA)."""
    from PIL import Image

    from multidiff.io import read_image

    ramp16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp16).save(tmp_path / "g16.png")  # mode I;16
    want = np.round(ramp16 / 65535 * 255).astype(np.uint8)
    got = read_image(tmp_path / "g16.png").numpy()
    assert got.shape == (8, 8, 3) and np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)
    assert np.array_equal(read_image(tmp_path / "g16.png", mode="L").numpy()[..., 0], want)

    Image.fromarray(ramp16.astype(np.int32)).save(tmp_path / "g32.tiff")  # mode I (32-bit)
    assert np.array_equal(read_image(tmp_path / "g32.tiff", mode="L").numpy()[..., 0], want)
    Image.fromarray((ramp16 / 65535).astype(np.float32), "F").save(tmp_path / "gf.tiff")
    assert np.abs(read_image(tmp_path / "gf.tiff", mode="L").numpy()[..., 0].astype(int) - want).max() <= 1

    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
    pal.putpixel((1, 2), 1)
    pal.save(tmp_path / "pal.png")
    p = read_image(tmp_path / "pal.png").numpy()
    assert tuple(p[2, 1]) == (200, 10, 30) and tuple(p[0, 0]) == (0, 0, 0)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (250, 250, 250)
    rgba[..., 3] = 0
    rgba[0, 0, 3] = 255
    rgba[0, 1, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    rgb = read_image(tmp_path / "alpha.png").numpy()
    assert tuple(rgb[0, 0]) == (250, 250, 250) and tuple(rgb[1, 1]) == (0, 0, 0)  # transparent -> black
    assert abs(int(rgb[0, 1, 0]) - 126) <= 1  # half transparent: half way to black
    assert np.array_equal(read_image(tmp_path / "alpha.png", mode="RGBA").numpy(), rgba)


def test_an_exif_orientation_is_applied_as_viewers_apply_it(tmp_path) -> None:
    """A phone photo stored landscape with orientation 6 (turn 90° clockwise to view) reads as the portrait
    picture people see, and its probe gives that size; the pixels land where a viewer shows them."""
    from PIL import Image

    from multidiff.io import probe_image

    stored = np.zeros((16, 32, 3), np.uint8)  # 16 high, 32 wide as stored
    stored[:, :16] = 255  # left half white
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    arr = read_image(tmp_path / "rot.jpg").numpy()
    assert arr.shape == (32, 16, 3)  # as displayed: portrait
    assert arr[:12].mean() > 200 and arr[20:].mean() < 50  # the white half is now on top
    info = probe_image(tmp_path / "rot.jpg")
    assert (info.height, info.width) == (32, 16)
