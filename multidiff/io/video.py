"""Video files: ffmpeg through imageio (mp4, webm, mov, ...), GIFs through pillow; probe, read at a frame rate or
stride, atomic write."""

from __future__ import annotations

import io
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multidiff.atomic import replacing, write_bytes
from multidiff.io.common import (
    VideoFileError,
    check_media_file,
)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif")

# extension -> (ffmpeg encoder, output pixel format, extra ffmpeg output arguments); GIFs: _gif_bytes
_VIDEO_WRITERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    ".mp4": ("libx264", "yuv420p", ("-movflags", "+faststart")),
    ".m4v": ("libx264", "yuv420p", ("-movflags", "+faststart")),
    ".mov": ("libx264", "yuv420p", ("-movflags", "+faststart")),
    ".mkv": ("libx264", "yuv420p", ()),
    ".webm": ("libvpx-vp9", "yuv420p", ("-b:v", "0")),
    ".avi": ("mpeg4", "yuv420p", ("-q:v", "2")),
}
_CHROMA_SUBSAMPLED = {"yuv420p"}
# ffmpeg opens a lone picture as a one-frame "video" of these codecs
_STILL_IMAGE_CODECS = {"png", "mjpeg", "bmp", "tiff", "webp", "jpeg2000", "jpegls", "qoi"}
# Browsers show GIF frames announcing <= 10 ms for 100 ms; we read them the same way, and write
# delays of at least 2 centiseconds (at most 50 fps).
_GIF_MIN_DELAY_MS = 10
_GIF_DEFAULT_DELAY_MS = 100
_GIF_MAX_FPS = 50.0
_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds.

    Attributes:
        fps: Frame rate in frames per second (for a GIF with uneven delays: the rate of its shortest delay).
        frames: Frames that decode, counted by decoding (at ``fps``).
        height: Frame height in pixels.
        width: Frame width in pixels.
        duration: Length in seconds announced by the container (0 when it announces none).
        codec: The codec name ffmpeg reports (``"gif"`` for GIFs).
    """

    fps: float
    frames: int
    height: int
    width: int
    duration: float
    codec: str

    @property
    def announced_frames(self) -> int | None:
        """Frames the container's duration announces, ``round(duration * fps)``; None if unknown."""
        if self.duration <= 0:
            return None
        return int(round(self.duration * self.fps))


def source_frame_index(j: int, src_fps: float, *, fps: float | None = None, stride: int | None = None) -> int:
    """The source frame shown as output frame ``j`` when a clip is read at ``fps`` or every ``stride`` frames.

    At a target rate the output frame ``j`` is taken at time ``j / fps`` and shows the source frame
    on screen at that moment, ``floor(j * src_fps / fps)`` (frames are dropped or repeated as needed);
    with a stride it is ``j * stride``; with neither, ``j``.
    """
    if fps is not None and stride is not None:
        raise ValueError(f"pass fps or stride, not both (got fps={fps!r}, stride={stride!r})")
    if stride is not None:
        return j * stride
    if fps is None:
        return j
    return int(math.floor(j * src_fps / fps + _EPS))


def num_resampled_frames(
    num_frames: int, src_fps: float, *, fps: float | None = None, stride: int | None = None
) -> int:
    """How many output frames :func:`source_frame_index` maps into ``num_frames`` source frames."""
    if num_frames <= 0:
        return 0
    if stride is not None and fps is None:
        return (num_frames - 1) // stride + 1
    n = num_frames if fps is None else max(1, math.ceil(num_frames * fps / src_fps))
    while n > 0 and source_frame_index(n - 1, src_fps, fps=fps, stride=stride) >= num_frames:
        n -= 1
    while source_frame_index(n, src_fps, fps=fps, stride=stride) < num_frames:
        n += 1
    return n


def _check_resample_args(fps: float | None, stride: int | None) -> None:
    if fps is not None and stride is not None:
        raise ValueError(f"pass fps or stride, not both (got fps={fps!r}, stride={stride!r})")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise ValueError(f"stride must be a positive int, got {stride!r}")


def _ffmpeg_reason(err: BaseException) -> str:
    """The informative line of an ffmpeg failure (ffmpeg prints its whole banner before the error)."""
    # drop ffmpeg's "[in#0 @ 0x55d0...]" context prefixes
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln.strip()) for ln in str(err).splitlines() if ln.strip()]
    keys = ("moov atom not found", "does not contain any stream", "Invalid data", "Error", "error")
    for key in keys:
        for ln in lines:
            if key in ln:
                return ln
    return lines[-1] if lines else type(err).__name__


def _open_ffmpeg(path: Path) -> tuple[Any, dict[str, Any]]:
    import imageio

    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
    except (OSError, RuntimeError, ValueError, IndexError, StopIteration) as err:
        raise VideoFileError(path, f"not a readable video ({_ffmpeg_reason(err)})") from err
    meta = dict(reader.get_meta_data())
    fps = meta.get("fps")
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        reader.close()
        raise VideoFileError(path, f"unknown frame rate (ffmpeg reports fps={fps!r})")
    return reader, meta


def _iter_ffmpeg(path: Path, reader: Any) -> Any:
    """Frames ``(H, W, C)`` uint8 of an open reader; a decoding failure names the frame and the file."""
    k = 0
    try:
        for frame in reader:
            yield np.asarray(frame)
            k += 1
    except (OSError, RuntimeError, ValueError) as err:
        raise VideoFileError(path, f"corrupt or truncated after {k} frames ({_ffmpeg_reason(err)})") from err


def _read_gif(path: Path) -> tuple[np.ndarray, float]:
    """All frames of a GIF at a constant rate ``(F, H, W, 3)``, and that rate.

    GIF delays are per frame, in centiseconds. When they are even (within one centisecond, the rounding
    of a rate like 30 fps) the frames are returned as stored at ``F / total`` fps; otherwise they are
    resampled to the rate of the shortest delay, each frame repeated for as long as it is shown.
    """
    import imageio.v3 as iio

    frames: list[np.ndarray] = []
    delays: list[float] = []
    try:
        with iio.imopen(str(path), "r", plugin="pillow") as f:
            for k, im in enumerate(f.iter(mode="RGB")):
                frames.append(np.asarray(im, dtype=np.uint8))
                d = float(f.metadata(index=k).get("duration", 0) or 0)
                delays.append(d if d > _GIF_MIN_DELAY_MS else float(_GIF_DEFAULT_DELAY_MS))
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as err:
        if frames:
            raise VideoFileError(
                path, f"corrupt or truncated GIF after {len(frames)} frames ({err})"
            ) from err
        raise VideoFileError(path, f"not a readable GIF ({err})") from err
    if not frames:
        raise VideoFileError(path, "the GIF holds no frames")
    total = sum(delays)
    if max(delays) - min(delays) <= _GIF_MIN_DELAY_MS:
        return np.stack(frames), 1000.0 * len(frames) / total
    fps = 1000.0 / min(delays)
    starts = np.cumsum([0.0, *delays[:-1]])
    n_out = max(1, int(math.floor(total * fps / 1000.0 + _EPS)))
    times = np.arange(n_out) * (1000.0 / fps)
    idx = np.searchsorted(starts, times + _EPS, side="right") - 1
    return np.stack(frames)[idx], fps


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame rate, decodable frame count, size, announced duration and codec of a video or GIF.

    The frames are counted by decoding (ffmpeg without colour conversion; fast), so a truncated file
    reports fewer ``frames`` than ``announced_frames``.

    Raises:
        MediaNotFoundError: If the file does not exist.
        VideoFileError: If it is empty, not a video, has no video stream or no decodable frame.
    """
    path = Path(path)
    check_media_file(path, VideoFileError)
    if path.suffix.lower() == ".gif":
        frames, fps = _read_gif(path)
        f, h, w, _ = frames.shape
        return VideoInfo(fps=fps, frames=f, height=h, width=w, duration=f / fps, codec="gif")
    reader, meta = _open_ffmpeg(path)
    try:
        try:
            n = int(reader.count_frames())
        except (OSError, RuntimeError, ValueError) as err:
            raise VideoFileError(path, f"could not count the frames ({_ffmpeg_reason(err)})") from err
    finally:
        reader.close()
    if n <= 0:
        raise VideoFileError(path, "no decodable video frame")
    w, h = meta["size"]
    duration = meta.get("duration") or 0.0
    codec = str(meta.get("codec", "")).rstrip(",")
    if n == 1 and not duration and codec in _STILL_IMAGE_CODECS:
        raise VideoFileError(path, f"not a video: a single still image ({codec})")
    return VideoInfo(
        fps=float(meta["fps"]), frames=n, height=int(h), width=int(w), duration=float(duration), codec=codec
    )


def read_video(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    stride: int | None = None,
    start: int = 0,
) -> tuple[torch.Tensor, float]:
    """Decode a video (mp4, webm, mov, avi, mkv through ffmpeg; GIF through pillow) to uint8 RGB frames.

    Output frame ``j`` shows source frame :func:`source_frame_index` ``(start + j)``: at a target
    ``fps`` frames are dropped or repeated by time, with ``stride`` every ``stride``-th frame is kept.
    Decoding stops as soon as ``max_frames`` frames are collected.

    Args:
        path: The file.
        fps: Resample to this frame rate (None: the file's own).
        max_frames: Read at most this many output frames (None: to the end).
        stride: Keep every ``stride``-th frame instead (exclusive with ``fps``).
        start: First output frame (in output frames, after resampling).

    Returns:
        ``(frames [F, H, W, 3] uint8, fps)``: ``fps`` is the rate of the returned frames.

    Raises:
        MediaNotFoundError: If the file does not exist.
        VideoFileError: If it is empty, not a video, truncated before ``start``, or fails to decode.
        ValueError: For bad arguments.
    """
    _check_resample_args(fps, stride)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start!r}")
    path = Path(path)
    check_media_file(path, VideoFileError)
    stop = math.inf if max_frames is None else start + max_frames

    if path.suffix.lower() == ".gif":
        all_frames, src_fps = _read_gif(path)
        n_out = num_resampled_frames(len(all_frames), src_fps, fps=fps, stride=stride)
        js = range(start, int(min(n_out, stop)))
        idx = [source_frame_index(j, src_fps, fps=fps, stride=stride) for j in js]
        out = [all_frames[i] for i in idx]
    else:
        reader, meta = _open_ffmpeg(path)
        src_fps = float(meta["fps"])
        out = []
        j = start
        want = source_frame_index(j, src_fps, fps=fps, stride=stride)
        try:
            for i, frame in enumerate(_iter_ffmpeg(path, reader)):
                while i == want and j < stop:  # a frame may be repeated when fps > src_fps
                    out.append(frame)
                    j += 1
                    want = source_frame_index(j, src_fps, fps=fps, stride=stride)
                if j >= stop:
                    break
        finally:
            reader.close()
    if not out:
        raise VideoFileError(path, f"no frame at or after output frame {start} (the video is shorter)")
    if fps is not None:
        out_fps = float(fps)
    elif stride is not None:
        out_fps = src_fps / stride
    else:
        out_fps = src_fps
    return torch.from_numpy(np.stack(out)), out_fps


def _frames_array(frames: Any, path: Path) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise ValueError(
            f"cannot write {path}: frames must be uint8 (got {arr.dtype}); "
            "convert model outputs with multidiff.modalities.image.to_uint8"
        )
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"cannot write {path}: expected frames [F, H, W, C] with F >= 1 and C in (1, 3, 4), got {arr.shape}"
        )
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _gif_bytes(frames: np.ndarray, fps: float, path: Path) -> bytes:
    """The bytes of an endlessly looping GIF of uint8 RGB frames ``[F, H, W, 3]``, every frame kept.

    Pillow's animated-GIF writer (``save(..., save_all=True)``) is not used because it merges identical
    consecutive frames into one frame shown for longer: a clip in which something pauses for a frame
    (a small digit moving less than half a pixel) would come back from :func:`read_video` with fewer
    frames, or resampled to another count. Here pillow only compresses each frame alone, as a one-frame
    GIF, and the animation is assembled from those pieces as the GIF89a specification lays it out:
    header and logical screen without a global colour table, a NETSCAPE2.0 application block asking
    for an endless loop, then for every frame a graphic control extension holding its delay and the
    image itself, with the palette pillow wrote for it as its local colour table.

    Each frame gets its own palette: a frame of at most 256 distinct colours is stored exactly (its
    palette is its colours); a frame with more is reduced to 256 colours by median cut, without
    dithering. Delays are whole centiseconds, rounded cumulatively so the clip lasts ``F / fps``
    within half a centisecond (8 fps alternates 13 and 12). Browsers and :func:`read_video` show a
    delay of 1 centisecond for 100 ms, so rates above 50 fps are written at 50 fps.

    ``path`` only names the destination in error messages.
    """
    from PIL import Image

    def end_of_sub_blocks(data: bytes, pos: int) -> int:
        # GIF data is a chain of sub-blocks (a length byte, then that many bytes) ending with a 0 byte
        while data[pos]:
            pos += data[pos] + 1
        return pos + 1

    n, h, w, _ = frames.shape
    rate = min(fps, _GIF_MAX_FPS)
    ends = np.floor(np.arange(n + 1) * (100.0 / rate) + 0.5).astype(np.int64)  # centiseconds
    delays = np.diff(ends)
    if delays.max() > 0xFFFF:
        raise ValueError(f"cannot write {path}: a GIF frame lasts at most 655.35 s, fps={fps!r} is too low")

    out = [b"GIF89a", struct.pack("<HHBBB", w, h, 0, 0, 0)]  # logical screen: no global colour table
    out.append(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")  # loop count 0: forever
    for frame, delay in zip(frames, delays.tolist(), strict=True):
        rgb = frame.astype(np.int32)
        colours, index = np.unique(
            (rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]).ravel(), return_inverse=True
        )
        if len(colours) <= 256:  # exact: the palette is the frame's colours
            image = Image.frombytes("P", (w, h), index.astype(np.uint8).tobytes())
            palette = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=-1)  # (N, 3)
            image.putpalette(palette.astype(np.uint8).tobytes())
        else:
            image = Image.fromarray(frame).quantize(
                256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
            )
        buf = io.BytesIO()
        image.save(buf, format="GIF", interlace=False)
        one = buf.getvalue()  # header, logical screen, [global table], [extensions], image, trailer

        screen_flags = one[10]
        table_bits = screen_flags & 7  # a table holds 2 ** (bits + 1) colours
        table = one[13 : 13 + 3 * 2 ** (table_bits + 1)] if screen_flags & 0x80 else b""
        pos = 13 + len(table)
        while one[pos] == 0x21:  # extensions pillow may add (comment, graphic control): dropped
            pos = end_of_sub_blocks(one, pos + 2)
        if one[pos] != 0x2C:
            raise RuntimeError(f"cannot write {path}: unexpected block {one[pos]:#04x} in pillow's GIF frame")
        left, top, fw, fh, image_flags = struct.unpack("<HHHHB", one[pos + 1 : pos + 10])
        pos += 10
        if image_flags & 0x80:  # pillow wrote a local table: it replaces the global one
            table_bits = image_flags & 7
            table = one[pos : pos + 3 * 2 ** (table_bits + 1)]
            pos += len(table)
        if not table:
            raise RuntimeError(f"cannot write {path}: pillow wrote a GIF frame without a palette")
        pixels = one[pos : end_of_sub_blocks(one, pos + 1)]  # LZW minimum code size, then sub-blocks

        # graphic control extension: disposal 1 (leave the frame in place), the delay, no transparency
        out.append(struct.pack("<BBBBHBB", 0x21, 0xF9, 4, 1 << 2, delay, 0, 0))
        flags = 0x80 | (image_flags & 0x40) | table_bits  # local colour table; keep the interlace bit
        out += [struct.pack("<BHHHHB", 0x2C, left, top, fw, fh, flags), table, pixels]
    out.append(b"\x3b")  # trailer
    return b"".join(out)


def write_video(
    path: str | os.PathLike[str],
    frames: torch.Tensor | np.ndarray,
    fps: float,
    *,
    crf: int = 18,
    pad_odd: bool = True,
) -> Path:
    """Write uint8 frames as a video, atomically; the format follows the extension.

    mp4 / m4v / mov / mkv: H.264 (libx264, yuv420p, ``+faststart``); webm: VP9; avi: MPEG-4 part 2;
    gif: written by pillow alone (no ffmpeg needed), every frame kept, each frame with its own palette
    and no dithering (exact for frames of at most 256 colours, so for any clip of at most 256 colours;
    frames with more are quantised to 256 by median cut). GIF stores delays in centiseconds, so rates
    like 30 fps come back as about 30 fps; rates above 50 fps are written at 50 fps.

    yuv420p halves the chroma resolution, so its frames need an even height and width: odd sizes are
    padded by repeating the last row or column (``pad_odd``), or refused.

    Args:
        path: Destination; its folder must exist.
        frames: ``[F, H, W, C]`` uint8 (C = 1, 3 or 4; alpha is dropped) or ``[F, H, W]``.
        fps: Frame rate.
        crf: Constant rate factor for H.264 and VP9 (lower is better; 18 is visually near-lossless).
        pad_odd: Pad odd sizes to even for chroma-subsampled codecs; False raises instead.

    Returns:
        The destination path.

    Raises:
        ValueError: For an unsupported extension, a bad frame array, rate or odd size (the file is named).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"cannot write {path}: unsupported extension {ext!r}; use one of {sorted(VIDEO_EXTENSIONS)}"
        )
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"cannot write {path}: fps must be a positive number, got {fps!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    arr = _frames_array(frames, path)  # (F, H, W, 3)
    if ext == ".gif":
        return write_bytes(path, _gif_bytes(arr, float(fps), path))

    import imageio_ffmpeg

    codec, pix_fmt, extra = _VIDEO_WRITERS[ext]
    _, h, w, _ = arr.shape
    if pix_fmt in _CHROMA_SUBSAMPLED and (h % 2 or w % 2):
        if not pad_odd:
            raise ValueError(
                f"cannot write {path}: {codec} with {pix_fmt} needs an even height and width, got {h}x{w} "
                "(pass pad_odd=True to pad)"
            )
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    params = list(extra)
    if codec in ("libx264", "libvpx-vp9"):
        params += ["-crf", str(int(crf))]
    with replacing(path) as tmp:
        # imageio-ffmpeg's engine directly, with the encoder, pixel format and arguments chosen above
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (arr.shape[2], arr.shape[1]),  # (W, H) after padding
            fps=float(fps),
            codec=codec,
            pix_fmt_in="rgb24",
            pix_fmt_out=pix_fmt,
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=params,
        )
        writer.send(None)  # starts ffmpeg
        try:
            for frame in arr:
                writer.send(frame)
        finally:
            writer.close()
    return path
