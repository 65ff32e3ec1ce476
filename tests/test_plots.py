"""multidiff.plots: the mel scale against librosa, spectrogram and mel pictures whose bright pixels sit where
the tone's frequency is on the axis, the loss curve's shape and scale, and grid layouts."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from multidiff import plots


def _tone(freq: float, sr: int = 16000, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return 0.5 * np.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_scale_matches_librosa_and_round_trips(scale: str) -> None:
    librosa = pytest.importorskip("librosa")  # a core dependency; kept optional here for minimal installs
    hz = np.array([0.0, 50.0, 440.0, 999.0, 1000.0, 1500.0, 4000.0, 11025.0])
    ref = librosa.hz_to_mel(hz, htk=scale == "htk")
    np.testing.assert_allclose(plots.hz_to_mel(hz, scale), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(plots.mel_to_hz(plots.hz_to_mel(hz, scale), scale), hz, rtol=1e-9, atol=1e-6)


def _peak_row(image: np.ndarray, plot: plots.Plot, column: int) -> int:
    left, top, right, bottom = plot.box
    brightness = image[top:bottom, column].astype(np.float64).sum(axis=1)
    return top + int(np.argmax(brightness))


def test_spectrogram_png_puts_a_tone_at_its_frequency_with_axes_and_colour_bar(tmp_path) -> None:
    plot = plots.spectrogram_png(_tone(1000.0), 16000, tmp_path / "tone.png", n_fft=512)
    image = iio.imread(plot.path)
    left, top, right, bottom = plot.box
    assert image.shape[0] > bottom and image.shape[1] > right  # room for ticks, labels and the bar
    assert plot.y.hi == pytest.approx(8000 + 16000 / 512 / 2) and plot.x.hi == pytest.approx(1.0, abs=0.02)
    bin_px = (bottom - top) / (512 // 2 + 1)
    for column in (left + 40, (left + right) // 2, right - 40):
        assert abs(_peak_row(image, plot, column) - plot.y_pixel(1000.0)) <= bin_px + 1
    # the colour bar runs from the loudest colour (0 dB) at the top to the darkest at the bottom
    bl, bt, br, bb = plot.colorbar
    assert plot.color_range == (-80.0, 0.0)
    np.testing.assert_array_equal(
        image[bt, (bl + br) // 2, :3], plots.colorize(np.array([[1.0]]), 0, 1)[0, 0]
    )
    np.testing.assert_array_equal(
        image[bb - 1, (bl + br) // 2, :3], plots.colorize(np.array([[0.0]]), 0, 1)[0, 0]
    )
    # a rising sweep: the bright row climbs from left to right
    t = np.arange(16000) / 16000
    sweep = np.sin(2 * math.pi * (500 * t + 1500 * t**2))  # 500 Hz -> 3500 Hz
    plot = plots.spectrogram_png(sweep, 16000, tmp_path / "sweep.png", n_fft=512)
    image = iio.imread(plot.path)
    early = _peak_row(image, plot, int(plot.x_pixel(0.2)))
    late = _peak_row(image, plot, int(plot.x_pixel(0.8)))
    assert (
        abs(early - plot.y_pixel(500 + 3000 * 0.2)) <= 4 and abs(late - plot.y_pixel(500 + 3000 * 0.8)) <= 4
    )


def test_mel_png_places_bins_on_the_mel_axis(tmp_path) -> None:
    from multidiff.modalities.mel import LogMel, MelSpec

    spec = MelSpec(sample_rate=16000, n_fft=512, win_length=512, hop_length=128, n_mels=32, fmax=8000.0,
                   edge_pad=192)  # fmt: skip
    mel = LogMel(spec)(torch.tensor(_tone(2000.0), dtype=torch.float32)[None])[0]  # (M, T)
    plot = plots.mel_png(mel, spec, tmp_path / "mel.png")
    image = iio.imread(plot.path)
    left, top, right, bottom = plot.box
    bin_px = (bottom - top) / 32
    # the brightest bin is the filter whose peak is nearest 2 kHz: its centre row on the axis
    peak_bin = int(mel[:, mel.shape[1] // 2].argmax())
    centres = plots.mel_to_hz(np.linspace(*plots.hz_to_mel(np.array([0.0, 8000.0])), 34)[1:-1])
    row = _peak_row(image, plot, (left + right) // 2)
    assert abs(row - plot.y_pixel(float(centres[peak_bin]))) <= bin_px / 2 + 1
    assert abs(centres[peak_bin] - 2000.0) < 200  # and that bin is near the tone
    assert plot.y.scale == "mel-slaney" and plot.color_range[1] - plot.color_range[0] <= 80.0 + 1e-9


def test_loss_curve_png_is_log_scaled_and_falls(tmp_path) -> None:
    records = [{"step": s, "loss": 2.0 * math.exp(-s / 60)} for s in range(10, 310, 10)]
    records += [{"step": 310, "loss": "nan"}, {"step": 320, "event": "resumed"}]  # left out
    plot = plots.loss_curve_png(records, tmp_path / "loss.png")
    assert plot.y.scale == "log" and plot.x.lo == 10 and plot.x.hi == 300
    image = iio.imread(plot.path)[..., :3].astype(int)
    dark = np.abs(image - np.array([25, 80, 160])).sum(-1) < 60  # the smoothed line's colour

    def line_row(step: float) -> float:
        col = int(plot.x_pixel(step))
        rows = np.nonzero(dark[:, col])[0]
        return float(rows.mean())

    assert line_row(20) < line_row(150) < line_row(290)  # falls: rows grow downwards
    # on a log axis an exponential decay is a straight line: equal steps, equal drops (the EMA lags a little)
    drop1, drop2 = line_row(150) - line_row(50), line_row(250) - line_row(150)
    assert drop1 == pytest.approx(drop2, rel=0.2)
    with pytest.raises(ValueError, match="no finite 'loss'"):
        plots.loss_curve_png([{"step": 1, "loss": "nan"}], tmp_path / "none.png")
    flat = plots.loss_curve_png([{"step": s, "loss": 1.0 + 0.01 * s} for s in range(5)], tmp_path / "f.png")
    assert flat.y.scale == "linear"


def test_grids_and_strips_place_every_tile(tmp_path) -> None:
    images = np.zeros((5, 4, 6, 3), dtype=np.uint8)
    for k in range(5):
        images[k] = 10 * (k + 1)
    grid = plots.image_grid(images, 3, scale=2, gap=1)
    assert grid.shape == (2 * 8 + 1, 3 * 12 + 2, 3)
    assert grid[0, 0, 0] == 10 and grid[9, 13 * 1 + 1, 0] == 50 and grid[9, 27, 0] == 255  # empty slot white
    videos = np.zeros((2, 10, 4, 4, 3), dtype=np.uint8)
    videos[:, :, :, :, 0] = np.arange(10, dtype=np.uint8)[None, :, None, None] * 20
    strip = plots.video_strip(videos, frames=4, gap=0)
    assert strip.shape == (8, 16, 3)
    assert [int(strip[0, 4 * j, 0]) for j in range(4)] == [0, 60, 120, 180]  # frames 0, 3, 6, 9
    tiled = plots.video_grid(videos, 2, gap=0)
    assert tiled.shape == (10, 4, 8, 3) and int(tiled[9, 0, 5, 0]) == 180
