"""Pictures of what a model makes and how training goes, drawn with pillow alone (no matplotlib).

* :func:`spectrogram_png`: a waveform's STFT magnitude in dB, axes in seconds and Hz, a colour bar.
* :func:`mel_png`: a log-mel ``[M, T]`` on its mel-spaced frequency axis, ticks in Hz, a colour bar in dB.
* :func:`loss_curve_png`: the loss of a run's log against the step (raw and smoothed; log scale when the
  loss spans more than a decade).
* :func:`image_grid`, :func:`video_strip`, :func:`video_grid`: images and clips laid out as one picture
  (or one clip) for previews, the gallery and the web page.

Every drawing function returns a :class:`Plot` that says where its data area lies in pixels and how values
map onto it, so a test (or a caller placing annotations) can find a value's pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Axis",
    "Plot",
    "colorize",
    "hz_to_mel",
    "mel_to_hz",
    "spectrogram_db",
    "spectrogram_png",
    "mel_png",
    "loss_curve_png",
    "image_grid",
    "video_strip",
    "video_grid",
]

# Anchor colours of a dark-to-bright perceptual ramp (black, purple, red, orange, pale yellow).
_RAMP = np.array(
    [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64
)
_INK = (40, 40, 40)
_GRID = (225, 225, 225)
_RAW = (160, 190, 225)
_SMOOTH = (25, 80, 160)
_BACKGROUND = (255, 255, 255)


def colorize(image: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map a 2-D float array to RGB uint8 ``[H, W, 3]`` through a dark-to-bright colour ramp.

    Args:
        image: ``[H, W]`` values.
        lo: Value mapped to the darkest colour (default: the minimum).
        hi: Value mapped to the brightest colour (default: the maximum).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"colorize expects a 2-D array, got shape {image.shape}")
    finite = np.isfinite(image)
    if lo is None:
        lo = float(image[finite].min()) if finite.any() else 0.0
    if hi is None:
        hi = float(image[finite].max()) if finite.any() else 1.0
    u = np.clip((np.where(finite, image, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * (len(_RAMP) - 1)
    i = np.minimum(u.astype(np.int64), len(_RAMP) - 2)
    w = (u - i)[..., None]
    rgb = (1 - w) * _RAMP[i] + w * _RAMP[i + 1]
    return np.round(rgb).astype(np.uint8)


# ----------------------------------------------------------------------------------- mel scale
def hz_to_mel(hz: float | np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Frequency in Hz to mels: ``"slaney"`` (linear below 1 kHz, logarithmic above; Slaney's Auditory
    Toolbox, librosa's default) or ``"htk"`` (``2595 log10(1 + f / 700)``, O'Shaughnessy 1987)."""
    f = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'slaney' or 'htk', got {scale!r}")
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    linear = f / f_sp
    log = min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log, linear)


def mel_to_hz(mel: float | np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'slaney' or 'htk', got {scale!r}")
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


# ----------------------------------------------------------------------------------- axes
@dataclass(frozen=True)
class Axis:
    """One axis of a plot: the value range its pixels span and how values are spaced along it.

    Attributes:
        lo: Value at the left (x) or bottom (y) edge of the data area.
        hi: Value at the right (x) or top (y) edge.
        scale: ``"linear"``, ``"log"`` (base 10), ``"mel-slaney"`` or ``"mel-htk"`` (values in Hz, spaced
            evenly in mels).
        label: The axis title.
    """

    lo: float
    hi: float
    scale: str = "linear"
    label: str = ""

    def __post_init__(self) -> None:
        if self.scale not in ("linear", "log", "mel-slaney", "mel-htk"):
            raise ValueError(f"Axis.scale must be linear, log, mel-slaney or mel-htk, got {self.scale!r}")
        if self.scale == "log" and not 0 < self.lo < self.hi:
            raise ValueError(f"a log axis needs 0 < lo < hi, got {self.lo}, {self.hi}")
        if not self.lo < self.hi:
            raise ValueError(f"Axis needs lo < hi, got {self.lo}, {self.hi}")

    def transform(self, value: float | np.ndarray) -> np.ndarray:
        """Values in the axis's evenly spaced coordinate (log10, mels or the value itself)."""
        v = np.asarray(value, dtype=np.float64)
        if self.scale == "log":
            return np.log10(np.maximum(v, 1e-300))
        if self.scale.startswith("mel-"):
            return hz_to_mel(v, self.scale[4:])
        return v

    def fraction(self, value: float | np.ndarray) -> np.ndarray:
        """Where ``value`` lies between the edges: 0 at ``lo``, 1 at ``hi``."""
        a, b = self.transform(self.lo), self.transform(self.hi)
        return (self.transform(value) - a) / (b - a)


@dataclass(frozen=True)
class Plot:
    """A written picture: where its data area is and how values map onto it.

    Attributes:
        path: The PNG written.
        box: ``(left, top, right, bottom)`` pixels of the data area (right and bottom exclusive).
        x: The horizontal axis.
        y: The vertical axis (``lo`` at the bottom).
        colorbar: ``(left, top, right, bottom)`` of the colour bar, or None.
        color_range: The values at the bottom and top of the colour bar, or None.
    """

    path: Path
    box: tuple[int, int, int, int]
    x: Axis
    y: Axis
    colorbar: tuple[int, int, int, int] | None = None
    color_range: tuple[float, float] | None = None

    def x_pixel(self, value: float) -> float:
        """The pixel column (continuous; pixel i spans [i, i + 1)) of x value ``value``."""
        left, _, right, _ = self.box
        return left + float(self.x.fraction(value)) * (right - left)

    def y_pixel(self, value: float) -> float:
        """The pixel row (continuous) of y value ``value``; larger values are higher up."""
        _, top, _, bottom = self.box
        return bottom - float(self.y.fraction(value)) * (bottom - top)


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    k = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * k >= raw:
            return m * k
    return 10.0 * k


def _ticks(axis: Axis, count: int = 5) -> list[float]:
    """Round values inside the axis: multiples of 1, 2, 2.5 or 5 x 10^k (linear), decades (log), a fixed
    ladder of Hz (mel)."""
    lo, hi = axis.lo, axis.hi
    if axis.scale == "log":
        ticks = [
            10.0**k for k in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)
        ]
        if len(ticks) < 3:
            ticks = [
                m * 10.0**k
                for k in range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1)
                for m in (1, 2, 5)
            ]
        return [t for t in ticks if lo <= t <= hi]
    if axis.scale.startswith("mel-"):
        ladder = [0, 100, 200, 500, 1000, 2000, 4000, 8000, 16000, 32000]
        ticks = [float(f) for f in ladder if lo <= f <= hi]
        return ticks
    step = _nice_step(hi - lo, count)
    first = math.ceil(lo / step - 1e-9)
    return [round(i * step, 10) for i in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def _spaced(ticks: list[float], pixel: Any, min_gap: float) -> list[float]:
    """Drop ticks closer than ``min_gap`` pixels to the previous one kept (labels must not overlap)."""
    kept: list[float] = []
    for t in ticks:
        if not kept or abs(pixel(t) - pixel(kept[-1])) >= min_gap:
            kept.append(t)
    return kept


def _label(value: float, hz: bool = False) -> str:
    if hz and abs(value) >= 1000:
        return f"{value / 1000:g}k"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{round(value, 6):g}"


def _font(size: int = 12) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _render(
    data: np.ndarray | None,
    x: Axis,
    y: Axis,
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int],
    title: str = "",
    colorbar: tuple[float, float, str] | None = None,
    lines: Sequence[tuple[np.ndarray, np.ndarray, tuple[int, int, int], int]] = (),
) -> Plot:
    """Draw axes, ticks, titles, an optional colour bar, and either an RGB ``data`` image stretched over the
    data area (nearest neighbour, so every pixel shows one value) or polylines in axis values."""
    from PIL import Image, ImageDraw

    width, height = size
    font, small = _font(12), _font(11)
    left, top = 62, 26 if title else 10
    right_margin = 70 if colorbar else 14
    box = (left, top, left + width, top + height)
    canvas = Image.new("RGB", (left + width + right_margin, top + height + 40), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    plot = Plot(Path(path), box, x, y)
    hz = y.scale.startswith("mel-") or "Hz" in y.label

    xt = _spaced(_ticks(x, max(2, width // 90)), plot.x_pixel, 40)
    yt = _spaced(_ticks(y, max(2, height // 45)), plot.y_pixel, 14)
    if data is None:  # grid lines under the curves
        for t in xt:
            draw.line([(round(plot.x_pixel(t)), top), (round(plot.x_pixel(t)), box[3] - 1)], fill=_GRID)
        for t in yt:
            draw.line([(left, round(plot.y_pixel(t))), (box[2] - 1, round(plot.y_pixel(t)))], fill=_GRID)
    else:
        image = Image.fromarray(np.ascontiguousarray(data)).resize((width, height), Image.Resampling.NEAREST)
        canvas.paste(image, (left, top))
    for xs, ys, color, w in lines:
        px = [plot.x_pixel(v) for v in xs]
        py = [plot.y_pixel(v) for v in ys]
        points = [(a, b) for a, b in zip(px, py) if math.isfinite(a) and math.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=color, width=w, joint="curve")
        elif points:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=color)
    draw.rectangle([left - 1, top - 1, box[2], box[3]], outline=_INK)

    for t in xt:  # x ticks and labels
        px = round(plot.x_pixel(t))
        draw.line([(px, box[3]), (px, box[3] + 4)], fill=_INK)
        draw.text((px, box[3] + 6), _label(t), fill=_INK, font=small, anchor="mt")
    draw.text(((left + box[2]) / 2, box[3] + 22), x.label, fill=_INK, font=font, anchor="mt")
    for t in yt:  # y ticks and labels
        py = round(plot.y_pixel(t))
        draw.line([(left - 5, py), (left - 1, py)], fill=_INK)
        draw.text((left - 7, py), _label(t, hz), fill=_INK, font=small, anchor="rm")
    if y.label:  # the y title, rotated
        w = int(draw.textlength(y.label, font=font)) + 4
        label = Image.new("RGB", (w, 16), _BACKGROUND)
        ImageDraw.Draw(label).text((2, 1), y.label, fill=_INK, font=font)
        label = label.rotate(90, expand=True)
        canvas.paste(label, (2, max(0, (top + box[3]) // 2 - label.height // 2)))
    if title:
        draw.text((left, 6), title, fill=_INK, font=font)

    bar_box = color_range = None
    if colorbar is not None:  # a vertical ramp, its low value at the bottom
        lo, hi, what = colorbar
        bar_box = (box[2] + 12, top, box[2] + 24, box[3])
        ramp = colorize(np.linspace(hi, lo, height)[:, None].repeat(12, axis=1), lo, hi)
        canvas.paste(Image.fromarray(ramp), bar_box[:2])
        draw.rectangle([bar_box[0] - 1, top - 1, bar_box[2], box[3]], outline=_INK)
        bar_axis = Axis(lo, hi) if hi > lo else Axis(lo, lo + 1)
        for t in _ticks(bar_axis, 4):
            py = round(box[3] - float(bar_axis.fraction(t)) * height)
            draw.line([(bar_box[2], py), (bar_box[2] + 3, py)], fill=_INK)
            draw.text((bar_box[2] + 5, py), _label(t), fill=_INK, font=small, anchor="lm")
        draw.text((bar_box[0], box[3] + 6), what, fill=_INK, font=small)
        color_range = (float(lo), float(hi))

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return Plot(out, box, x, y, bar_box, color_range)


# ----------------------------------------------------------------------------------- spectrograms
def spectrogram_db(
    wave: Any, n_fft: int = 1024, hop_length: int | None = None, floor_db: float = -80.0
) -> np.ndarray:
    """The STFT magnitude of a mono or multichannel wave (channels averaged) in dB relative to its
    maximum, floored at ``floor_db``: ``[n_fft // 2 + 1, frames]``; Hann window, centred frames.

    Args:
        wave: ``[N]`` or ``[C, N]`` samples (numpy or torch).
        n_fft: FFT size (frequency resolution ``sample_rate / n_fft``).
        hop_length: Samples between frames (default ``n_fft // 4``).
        floor_db: The lowest level shown.
    """
    import torch

    w = torch.as_tensor(
        np.asarray(wave.detach().cpu() if hasattr(wave, "detach") else wave), dtype=torch.float32
    )
    if w.ndim == 2:
        w = w.mean(0)
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"spectrogram_db expects a wave [N] or [C, N], got shape {tuple(w.shape)}")
    hop = hop_length or n_fft // 4
    if w.numel() < n_fft:
        w = torch.nn.functional.pad(w, (0, n_fft - w.numel()))
    spec = torch.stft(w, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    mag = spec.abs().numpy().astype(np.float64)  # (F, T)
    db = 20.0 * np.log10(np.maximum(mag, 1e-10))
    db -= db.max()
    return np.maximum(db, floor_db)


def spectrogram_png(
    wave: Any,
    sample_rate: int,
    path: str | os.PathLike[str],
    *,
    n_fft: int = 1024,
    hop_length: int | None = None,
    floor_db: float = -80.0,
    title: str = "",
    size: tuple[int, int] = (480, 200),
) -> Plot:
    """Write a wave's spectrogram as a PNG: time in seconds across, frequency in Hz up (linear, 0 to
    Nyquist), level in dB relative to the loudest bin on a colour bar.

    Each STFT bin is drawn centred on its frequency ``k · sample_rate / n_fft`` and each frame on its time
    ``t · hop / sample_rate``, so the y axis spans ``[-Δf/2, Nyquist + Δf/2]``.

    Args:
        wave: ``[N]`` or ``[C, N]`` samples (channels are averaged).
        sample_rate: Hz.
        path: The PNG to write (folders are created).
        n_fft: FFT size.
        hop_length: Samples between frames (default ``n_fft // 4``).
        floor_db: The lowest level shown.
        title: Text above the plot.
        size: ``(width, height)`` of the data area in pixels.

    Returns:
        The :class:`Plot` (data area and axes).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    hop = hop_length or n_fft // 4
    db = spectrogram_db(wave, n_fft, hop, floor_db)  # (F, T)
    df, dt = sample_rate / n_fft, hop / sample_rate
    x = Axis(-dt / 2, (db.shape[1] - 0.5) * dt, label="time (s)")
    y = Axis(-df / 2, (db.shape[0] - 0.5) * df, label="frequency (Hz)")
    return _render(colorize(db[::-1], floor_db, 0.0), x, y, path, size=size, title=title,
                   colorbar=(floor_db, 0.0, "dB"))  # fmt: skip


def mel_png(
    mel: Any,
    spec: Any,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    size: tuple[int, int] = (480, 200),
    range_db: float | None = 80.0,
) -> Plot:
    """Write a natural-log mel spectrogram ``[M, T]`` (or ``[C, M, T]``, channels averaged) as a PNG with a
    frequency axis in Hz at the bins' mel spacing, time in seconds and a colour bar in dB.

    Bin m is centred on the m-th inner point of ``M + 2`` points evenly spaced in mels between ``spec.fmin``
    and ``spec.fmax`` (the filterbank's triangle peaks); frame t on ``(t · hop - pad + n_fft / 2) / rate``.

    Args:
        mel: Log-mel values (``ln`` of magnitude when ``spec.power == 1``, of power when 2).
        spec: A :class:`~multidiff.modalities.mel.MelSpec` (or anything with its fields).
        path: The PNG to write.
        title: Text above the plot.
        size: ``(width, height)`` of the data area in pixels.
        range_db: Levels shown below the maximum (None: the whole range).
    """
    arr = np.asarray(mel.detach().float().cpu() if hasattr(mel, "detach") else mel, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(0)
    if arr.ndim != 2:
        raise ValueError(f"mel_png expects [M, T] or [C, M, T], got shape {arr.shape}")
    power = float(getattr(spec, "power", 1.0))
    db = arr * (10.0 if power == 2 else 20.0) / math.log(10.0)  # ln -> dB
    hi = float(np.nanmax(db))
    lo = float(np.nanmin(db)) if range_db is None else max(float(np.nanmin(db)), hi - range_db)
    if hi <= lo:
        lo = hi - 1.0
    scale = str(getattr(spec, "mel_scale", "slaney"))
    m_lo, m_hi = (float(v) for v in hz_to_mel(np.array([spec.fmin, spec.fmax]), scale))
    dm = (m_hi - m_lo) / (arr.shape[0] + 1)
    y_lo, y_hi = mel_to_hz(np.array([m_lo + dm / 2, m_hi - dm / 2]), scale)  # the outer bins' edges
    sr, hop = float(spec.sample_rate), float(spec.hop_length)
    pad = float(getattr(spec, "pad", 0))
    t0 = (getattr(spec, "n_fft", 2 * pad) / 2 - pad) / sr
    x = Axis(t0 - hop / sr / 2, t0 + (arr.shape[1] - 0.5) * hop / sr, label="time (s)")
    y = Axis(float(y_lo), float(y_hi), scale=f"mel-{scale}", label="frequency (Hz)")
    return _render(colorize(db[::-1], lo, hi), x, y, path, size=size, title=title, colorbar=(lo, hi, "dB"))


# ----------------------------------------------------------------------------------- training curves
def _finite_losses(records: Iterable[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    for r in records:
        v, s = r.get(key), r.get("step")
        if (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and isinstance(s, int)
        ):
            steps.append(s)
            values.append(float(v))
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def loss_curve_png(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    key: str = "loss",
    title: str = "training loss",
    size: tuple[int, int] = (480, 220),
) -> Plot:
    """Write the loss of a run's log records against the step: the logged values (light) and an
    exponential moving average over about a twentieth of the points (dark). The y axis is logarithmic when
    every value is positive and they span more than a factor of 10.

    Args:
        records: ``log.jsonl`` records (:func:`multidiff.train.read_log`); non-finite and missing values
            (a skipped step) are left out.
        path: The PNG to write.
        key: The record field to plot.
        title: Text above the plot.
        size: ``(width, height)`` of the data area in pixels.

    Raises:
        ValueError: If no record has a finite ``key``.
    """
    steps, values = _finite_losses(records, key)
    if not len(values):
        raise ValueError(f"no finite {key!r} values to plot for {path}")
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    alpha = min(1.0, 20.0 / len(values))  # EMA over ~n/20 points
    smooth = np.empty_like(values)
    acc = values[0]
    for i, v in enumerate(values):
        acc = acc + alpha * (v - acc)
        smooth[i] = acc
    lo, hi = float(values.min()), float(values.max())
    if lo > 0 and hi / lo > 10:
        y = Axis(lo / 1.15, hi * 1.15, scale="log", label=key)
    else:
        pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1e-3)
        y = Axis(lo - pad, hi + pad, label=key)
    s0, s1 = float(steps[0]), float(steps[-1])
    x = Axis(s0 - 0.5, s1 + 0.5) if s1 <= s0 else Axis(s0, s1)
    x = Axis(x.lo, x.hi, label="step")
    return _render(None, x, y, path, size=size, title=title,
                   lines=[(steps, values, _RAW, 1), (steps, smooth, _SMOOTH, 2)])  # fmt: skip


# ----------------------------------------------------------------------------------- layouts
def _as_uint8(a: Any) -> np.ndarray:
    arr = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.shape[-1] == 1:
        arr = arr.repeat(3, axis=-1)
    return arr


def image_grid(images: Any, cols: int | None = None, *, scale: int = 1, gap: int = 2) -> np.ndarray:
    """Tile uint8 images ``[B, H, W, C]`` into one ``[H', W', 3]`` picture, ``cols`` a row (default: about
    square), each pixel repeated ``scale`` times, ``gap`` white pixels between tiles."""
    arr = _as_uint8(images)
    if arr.ndim != 4:
        raise ValueError(f"image_grid expects [B, H, W, C], got shape {arr.shape}")
    arr = arr[..., :3]
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    b, h, w, c = arr.shape
    cols = cols or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, c), 255, dtype=np.uint8)
    for k in range(b):
        r, q = divmod(k, cols)
        out[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = arr[k]
    return out


def video_strip(videos: Any, frames: int = 8, *, scale: int = 1, gap: int = 2) -> np.ndarray:
    """One row per clip of ``videos`` ``[B, F, H, W, C]`` (uint8), ``frames`` evenly spaced frames across
    (first and last included): a still picture of how each clip moves."""
    arr = _as_uint8(videos)
    if arr.ndim != 5:
        raise ValueError(f"video_strip expects [B, F, H, W, C], got shape {arr.shape}")
    b, f = arr.shape[:2]
    idx = np.unique(np.round(np.linspace(0, f - 1, min(frames, f))).astype(np.int64))
    picked = arr[:, idx]  # (B, k, H, W, C)
    return image_grid(picked.reshape(b * len(idx), *arr.shape[2:]), len(idx), scale=scale, gap=gap)


def video_grid(videos: Any, cols: int | None = None, *, scale: int = 1, gap: int = 2) -> np.ndarray:
    """Tile clips ``[B, F, H, W, C]`` (uint8) side by side into one clip ``[F, H', W', 3]``, for a single
    GIF of several samples."""
    arr = _as_uint8(videos)
    if arr.ndim != 5:
        raise ValueError(f"video_grid expects [B, F, H, W, C], got shape {arr.shape}")
    return np.stack([image_grid(arr[:, t], cols, scale=scale, gap=gap) for t in range(arr.shape[1])])
