"""Make a folder of short moving-digit clips, offline, from scikit-learn's bundled 8x8 digits.

    python recipes/data/make_digits_video.py --out DIR --num 1000 --frames 16 --size 32

Each clip shows one handwritten digit (``sklearn.datasets.load_digits``: 1797 images of 8x8 pixels,
shipped inside scikit-learn, nothing downloaded), upscaled bilinearly to half the frame size, gliding
in a straight line and bouncing off the borders, white on black, like Moving MNIST (Srivastava et al.
2015) with one digit. Clips go to ``DIR/<digit>/clip_00000.mp4`` (labels from subfolders, as
:class:`~multidiff.data.video.VideoFolder` reads them); digits cycle 0..9 so the classes are balanced.
Clip ``i`` depends only on ``(--seed, i)``. mp4 and webm need ffmpeg (the ``imageio-ffmpeg`` package);
``--format gif`` is written by pillow alone and stores every frame exactly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from multidiff.cli import OneLineParser
from multidiff.io import write_video
from multidiff.io.common import check_empty_folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog="make_digits_video", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    p.add_argument("--num", type=int, default=1000, help="number of clips")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=32, help="frame size in pixels (square; even for mp4)")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--format", default="mp4", choices=("mp4", "gif", "webm"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.num < 1 or args.frames < 1:
        p.error("--num and --frames must be >= 1")
    if not args.fps > 0:
        p.error(f"--fps must be > 0, got {args.fps}")
    if args.size < 8:
        p.error("--size must be >= 8")
    if args.format != "gif" and args.size % 2:
        p.error(f"--size {args.size} must be even for {args.format} (yuv420p)")
    return args


def load_glyphs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits upscaled to ``size x size`` as uint8 ``[N, size, size]``, and their labels ``[N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    up = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, s, s)
    glyphs = (up[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return glyphs, np.asarray(digits.target)


def render_clip(glyph: np.ndarray, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One digit gliding and bouncing inside a ``size x size`` frame: uint8 ``[F, size, size, 3]``."""
    g = glyph.shape[0]
    span = size - g  # top-left corner stays in [0, span]
    pos = rng.uniform(0, span, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.5, 1.5) * max(1.0, size / 16)  # pixels per frame
    vel = speed * np.array([np.sin(angle), np.cos(angle)])
    clip = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        y, x = np.round(pos).astype(int)
        clip[t, y : y + g, x : x + g] = glyph[..., None]
        pos = pos + vel
        for axis in range(2):  # reflect off the borders
            if pos[axis] < 0:
                pos[axis], vel[axis] = -pos[axis], -vel[axis]
            elif pos[axis] > span:
                pos[axis], vel[axis] = 2 * span - pos[axis], -vel[axis]
    return clip


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = check_empty_folder(args.out, args.overwrite)
    glyphs, labels = load_glyphs(args.size // 2)
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    for d in range(10):
        (out / str(d)).mkdir(parents=True, exist_ok=True)
    for i in range(args.num):
        rng = np.random.default_rng([args.seed, i])
        digit = i % 10
        glyph = glyphs[rng.choice(by_digit[digit])]
        clip = render_clip(glyph, args.frames, args.size, rng)
        write_video(out / str(digit) / f"clip_{i:05d}.{args.format}", clip, args.fps)
    print(f"wrote {args.num} clips of {args.frames} frames at {args.size}x{args.size} to {out}")
    return out


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "make_digits_video"))
