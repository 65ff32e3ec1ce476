"""Still images through pillow: probe, read (any bit depth and mode to uint8 RGB), atomic write."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multidiff.atomic import replacing
from multidiff.io.common import (
    ImageFileError,
    check_media_file,
)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says.

    Attributes:
        height: Height in pixels.
        width: Width in pixels.
        mode: Pillow mode (``"RGB"``, ``"L"``, ``"P"``, ...).
        format: Pillow format name (``"PNG"``, ``"JPEG"``, ...).
    """

    height: int
    width: int
    mode: str
    format: str


#: The EXIF tag of a picture's orientation (1: as stored; 5-8: turned a quarter).
_ORIENTATION = 0x0112


def probe_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Read an image's header (size, mode, format) without decoding its pixels.

    Raises:
        MediaNotFoundError: If the file does not exist.
        ImageFileError: If it is empty or not an image.
    """
    from PIL import Image  # pillow: imageio's image backend

    path = Path(path)
    check_media_file(path, ImageFileError)
    try:
        with Image.open(path) as im:
            width, height = im.size
            mode, fmt = str(im.mode), str(im.format)
            if im.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):  # displayed turned a quarter: as read_image
                width, height = height, width
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # UnidentifiedImageError is an OSError
        raise ImageFileError(path, f"not a readable image ({err})") from err
    if width <= 0 or height <= 0:
        raise ImageFileError(path, f"invalid size {width}x{height}")
    return ImageInfo(int(height), int(width), mode, fmt)


def read_image(path: str | os.PathLike[str], mode: str = "RGB") -> torch.Tensor:
    """Decode an image (png, jpg, bmp, webp, ...) of any bit depth and mode through pillow.

    High bit depths are scaled, not clipped: 16-bit and 32-bit integer greys by their full range
    (65535 -> 255), float greys in [0, 1] by 255. Palette images are expanded. Transparency (an alpha band or
    a palette's transparent entry) is composited on black for ``"RGB"`` and ``"L"`` (the rule: transparent
    pixels become black, as the background of the moving-digit and mask data sets), kept for ``"RGBA"``.
    Animated files give their first frame. An EXIF orientation is applied, so the array is the picture as
    viewers show it.

    Args:
        path: The file.
        mode: ``"RGB"`` (default), ``"RGBA"`` or ``"L"``.

    Returns:
        ``[H, W, C]`` uint8 (C = 3, 4 or 1).

    Raises:
        MediaNotFoundError: If the file does not exist.
        ImageFileError: If it is empty, truncated or not an image.
    """
    from PIL import Image, ImageOps

    if mode not in ("RGB", "RGBA", "L"):
        raise ValueError(f"mode must be 'RGB', 'RGBA' or 'L', got {mode!r}")
    path = Path(path)
    check_media_file(path, ImageFileError)
    try:
        with Image.open(path) as im:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # as displayed: a photo's EXIF orientation applied
            im = _to_8bit(im)
            if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                if mode != "RGBA":
                    im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im)
            arr = np.asarray(im.convert(mode))
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as err:  # UnidentifiedImageError: OSError
        raise ImageFileError(path, f"not a readable image ({err})") from err
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageFileError(path, f"unexpected decoded image {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.array(arr, order="C"))  # a writable, contiguous copy of the decoded pixels


def _to_8bit(im: Any) -> Any:
    """A pillow image of a high-bit-depth grey mode (I;16*, I, F) as 8-bit ``L``, scaled by its range."""
    from PIL import Image

    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F" and a.size and float(np.nanmax(a)) <= 1.0:
        a = a * 255.0
    else:
        a = a * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.round(np.nan_to_num(a)), 0, 255).astype(np.uint8), "L")


def write_image(path: str | os.PathLike[str], image: torch.Tensor | np.ndarray, *, quality: int = 95) -> Path:
    """Write a uint8 image atomically; the format follows the extension (png, jpg/jpeg, bmp, webp).

    Args:
        path: Destination; its folder must exist.
        image: ``[H, W, C]`` uint8 (C = 1, 3 or 4; alpha is dropped for jpg) or ``[H, W]``.
        quality: JPEG / WebP quality (1-100).

    Returns:
        The destination path.

    Raises:
        ValueError: For an unsupported extension or a bad array (the file is named).
    """
    import imageio.v3 as iio

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"cannot write {path}: unsupported extension {ext!r}; use one of {list(IMAGE_EXTENSIONS)}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"cannot write {path}: the image must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))) or 0 in arr.shape:
        raise ValueError(
            f"cannot write {path}: expected an image [H, W, C] with C in (1, 3, 4), got {arr.shape}"
        )
    if ext in (".jpg", ".jpeg", ".bmp") and arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    kwargs: dict[str, Any] = {"quality": int(quality)} if ext in (".jpg", ".jpeg", ".webp") else {}
    with replacing(path) as tmp:
        iio.imwrite(str(tmp), np.ascontiguousarray(arr), plugin="pillow", extension=ext, **kwargs)
    return path
