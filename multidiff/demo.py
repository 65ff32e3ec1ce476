"""``multidiff demo audio|video|image``: synthetic data -> a tiny class-conditional model trained on the CPU ->
samples, in a few minutes, with pictures of what came out.

Each demo writes into ``--out``: ``data/`` (the synthetic folder, labelled by subfolder), ``run/`` (the
training run: checkpoints, ``log.jsonl``, ``loss.png``, ``previews/`` of the last step, ``pipeline/``) and
``samples/`` (generated files per class and one overview picture):

* audio: three classes of tones at 16 kHz (1.5 s files, 1 s training clips and samples): ``low`` (a 150-300 Hz tone with two harmonics), ``high``
  (a 1-2 kHz tone) and ``chirp`` (a sweep rising from ~300 Hz to ~2 kHz). Samples: wavs with a spectrogram
  PNG each; ``samples/overview.png`` stacks one spectrogram per class.
* video: 8-frame 16x16 clips of a soft ball on black: ``red-right`` (a red ball moving left to right),
  ``green-down`` (a green ball falling) and ``blue-diagonal`` (a blue ball moving to the lower right).
  Samples: GIFs; ``samples/overview.gif`` (all clips, enlarged) and ``samples/overview.png`` (a row of frames
  per clip).
* image: 16x16 pictures on dark grey: ``red-disc``, ``green-square`` and ``blue-cross`` at random places and
  sizes. Samples: PNGs; ``samples/overview.png`` (a row per class, enlarged).

The data is made by :func:`synth_tone_folder`, :func:`synth_ball_folder` and :func:`synth_shape_folder`,
which tests and benchmarks use too.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DEMOS",
    "run_demo",
    "synth_tone_folder",
    "synth_ball_folder",
    "synth_shape_folder",
    "TONE_CLASSES",
    "BALL_CLASSES",
    "SHAPE_CLASSES",
]

TONE_CLASSES = ("low", "high", "chirp")
#: class -> (RGB colour, motion: start (row, col) and step per frame in pixels of a 16-pixel frame)
BALL_CLASSES: dict[str, tuple[tuple[int, int, int], tuple[float, float]]] = {
    "red-right": ((255, 40, 40), (0.0, 1.5)),
    "green-down": ((40, 255, 40), (1.5, 0.0)),
    "blue-diagonal": ((60, 110, 255), (1.1, 1.1)),
}
SHAPE_CLASSES: dict[str, tuple[int, int, int]] = {
    "red-disc": (255, 50, 50),
    "green-square": (50, 230, 50),
    "blue-cross": (70, 120, 255),
}


def synth_tone_folder(
    root: str | os.PathLike[str],
    per_class: int = 8,
    sample_rate: int = 16000,
    seconds: float = 1.5,
    seed: int = 0,
) -> Path:
    """Write a small labelled folder of synthetic sounds (three classes) for demos and smoke tests.

    ``low/``: a 150-300 Hz tone with two harmonics; ``high/``: a 1-2 kHz tone; ``chirp/``: a rising sweep.
    Each file has a random frequency, a fade in/out and a little noise.
    """
    from multidiff.io import write_audio

    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)

    def write(path: Path, cls: str, rng: np.random.Generator) -> None:
        if cls == "low":
            f = rng.uniform(150, 300)
            x = sum(np.sin(2 * math.pi * f * h * t) / h for h in (1, 2, 3))
        elif cls == "high":
            x = np.sin(2 * math.pi * rng.uniform(1000, 2000) * t)
        else:
            f0, f1 = rng.uniform(200, 500), rng.uniform(1500, 3000)
            x = np.sin(2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
        x = 0.5 * fade * x / np.abs(x).max() + 0.003 * rng.standard_normal(n)
        write_audio(path, x.astype(np.float32), sample_rate)

    return _write_class_folder(root, TONE_CLASSES, ".wav", per_class, seed, write)


def _write_class_folder(
    root: str | os.PathLike[str],
    classes: Iterable[str],
    suffix: str,
    per_class: int,
    seed: int,
    write: Callable[[Path, str, np.random.Generator], None],
) -> Path:
    """Fill ``root/<class>/<class>-<k><suffix>`` for each class and k < ``per_class`` with
    ``write(path, cls, rng)``, every item drawn in order from one generator seeded ``seed``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            write(root / cls / f"{cls}-{k:02d}{suffix}", cls, rng)
    return root


def _blob(size: int, row: float, col: float, radius: float) -> np.ndarray:
    """A soft disc ``[size, size]`` in [0, 1]: 1 inside ``radius``, falling to 0 over one pixel."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    d = np.sqrt((y - row) ** 2 + (x - col) ** 2)
    return np.clip(radius + 0.5 - d, 0.0, 1.0)


def ball_clip(cls: str, rng: np.random.Generator, frames: int = 8, size: int = 16) -> np.ndarray:
    """One clip ``[F, H, W, 3]`` uint8 of class ``cls`` of :data:`BALL_CLASSES`: a ball of radius ~2.5 px
    that starts near one edge (random offset across the motion) and moves at the class's velocity (scaled to
    ``size``) with a random speed factor in [0.8, 1.2]."""
    color, (vr, vc) = BALL_CLASSES[cls]
    s = size / 16.0
    speed = rng.uniform(0.8, 1.2)
    vr, vc = vr * s * speed, vc * s * speed
    travel_r, travel_c = vr * (frames - 1), vc * (frames - 1)
    # start so that the whole path stays inside the frame; across the motion the position is random
    r0 = (
        (size - 1 - travel_r) / 2 + rng.uniform(-1, 1) * s if vr else rng.uniform(3.5 * s, size - 1 - 3.5 * s)
    )
    c0 = (
        (size - 1 - travel_c) / 2 + rng.uniform(-1, 1) * s if vc else rng.uniform(3.5 * s, size - 1 - 3.5 * s)
    )
    radius = 2.5 * s * rng.uniform(0.9, 1.1)
    out = np.zeros((frames, size, size, 3), dtype=np.float64)
    for f in range(frames):
        out[f] = _blob(size, r0 + vr * f, c0 + vc * f, radius)[..., None] * np.asarray(
            color, dtype=np.float64
        )
    return np.round(out).astype(np.uint8)


def synth_ball_folder(
    root: str | os.PathLike[str], per_class: int = 24, frames: int = 8, size: int = 16, seed: int = 0
) -> Path:
    """Write a labelled folder of GIF clips of moving balls (:data:`BALL_CLASSES`, one subfolder each)."""
    from multidiff.io import write_video

    def write(path: Path, cls: str, rng: np.random.Generator) -> None:
        write_video(path, ball_clip(cls, rng, frames, size), fps=8)

    return _write_class_folder(root, BALL_CLASSES, ".gif", per_class, seed, write)


def shape_image(cls: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """One ``[H, W, 3]`` uint8 picture of class ``cls`` of :data:`SHAPE_CLASSES` on dark grey: a filled disc,
    a filled square or a plus-shaped cross, its centre within 2 px of the middle, its size random."""
    s = size / 16.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = (size - 1) / 2 + rng.uniform(-2, 2, size=2) * s
    if cls == "red-disc":
        mask = _blob(size, cy, cx, rng.uniform(3.5, 5.5) * s)
    elif cls == "green-square":
        h = rng.uniform(3.0, 5.0) * s
        mask = ((np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= h)).astype(np.float64)
    elif cls == "blue-cross":
        h, w = rng.uniform(4.0, 6.0) * s, 1.2 * s
        mask = ((np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= w)) | (
            (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= w)
        )
        mask = mask.astype(np.float64)
    else:
        raise ValueError(f"unknown shape class {cls!r}; classes: {', '.join(SHAPE_CLASSES)}")
    color = np.asarray(SHAPE_CLASSES[cls], dtype=np.float64)
    background = np.full(3, 30.0)
    out = background + mask[..., None] * (color - background)
    return np.round(out).astype(np.uint8)


def synth_shape_folder(
    root: str | os.PathLike[str], per_class: int = 48, size: int = 16, seed: int = 0
) -> Path:
    """Write a labelled folder of PNG pictures of shapes (:data:`SHAPE_CLASSES`, one subfolder each)."""
    from multidiff.io import write_image

    def write(path: Path, cls: str, rng: np.random.Generator) -> None:
        write_image(path, shape_image(cls, rng, size))

    return _write_class_folder(root, SHAPE_CLASSES, ".png", per_class, seed, write)


# ----------------------------------------------------------------------------------- the demos
#: modality -> (default training steps, what the user sees/hears, for the help and the closing message)
DEMOS: dict[str, tuple[int, str]] = {
    "audio": (
        1500,
        "samples/low: a low hum (150-300 Hz with harmonics); samples/high: a steady whistle (1-2 kHz); "
        "samples/chirp: a rising sweep. Each wav has its spectrogram beside it; samples/overview.png shows "
        "one per class (low band, high line, rising line)",
    ),
    "video": (
        1500,
        "samples/overview.gif: one clip per column group, a red ball moving right, a green ball falling, a "
        "blue ball moving down-right; samples/overview.png shows their frames in rows",
    ),
    "image": (
        1500,
        "samples/overview.png: one row per class, red discs, green squares, blue crosses on dark grey",
    ),
}


def _parser(modality: str) -> argparse.ArgumentParser:
    from multidiff.cli import OneLineParser

    steps, shows = DEMOS[modality]
    p = OneLineParser(
        prog=f"multidiff demo {modality}",
        description=f"Synthetic {modality} -> a tiny class-conditional model trained on the CPU -> samples. "
        f"Afterwards: {shows}.",
    )
    p.add_argument("--out", required=True, help="demo folder (data/, run/, samples/)")
    p.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    p.add_argument("--num", type=int, default=2, help="samples per class")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance of the samples")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--report-to", help="tensorboard and/or wandb for the training run (as for multidiff train)"
    )
    return p


def run_demo(modality: str, argv: Sequence[str]) -> Path:
    """Run ``multidiff demo MODALITY ARGS``: make the data (kept if ``OUT/data`` exists), train (resumes when
    rerun), generate ``--num`` samples per class and draw the overview; returns ``OUT/samples``.

    Raises:
        ValueError: For an unknown modality or bad options (the message says which).
    """
    if modality not in DEMOS:
        raise ValueError(f"no demo for {modality!r}; available: {', '.join(sorted(DEMOS))}")
    args = _parser(modality).parse_args(list(argv))
    if args.steps < 1 or args.num < 1:
        raise ValueError("--steps and --num must be >= 1")
    if not math.isfinite(args.guidance):
        raise ValueError(f"--guidance must be a finite number, got {args.guidance}")
    from multidiff.generation import check_positive

    check_positive(args, "threads")
    from multidiff.train.distributed import parse_device
    from multidiff.train.monitor import parse_report_to

    parse_device(args.device)
    parse_report_to(args.report_to)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the demo")
    if out.is_dir() and (foreign := sorted({p.name for p in out.iterdir()} - {"data", "run", "samples"})):
        raise ValueError(
            f"--out {out} holds files that are not a demo's ({', '.join(foreign[:3])}); give a new or empty folder"
        )
    data, run, samples = out / "data", out / "run", out / "samples"
    common = [*(["--device", args.device] if args.device else []),
              *(["--threads", str(args.threads)] if args.threads else [])]  # fmt: skip
    train = [
        "--data", str(data), "--out", str(run), "--preset", "tiny", "--labels", "--steps", str(args.steps),
        "--preview-every", str(args.steps), "--preview-num", "3", "--log-every", "10", *common,
        *(["--report-to", args.report_to] if args.report_to else []),
    ]  # fmt: skip
    from multidiff.cli import load_recipe

    if modality == "audio":
        classes: Sequence[str] = TONE_CLASSES
        if not data.is_dir():
            synth_tone_folder(data)
        load_recipe("train_audio.py").main(train)
    elif modality == "video":
        classes = list(BALL_CLASSES)
        if not data.is_dir():
            synth_ball_folder(data)
        load_recipe("train_video.py").main(train)
    else:
        classes = list(SHAPE_CLASSES)
        if not data.is_dir():
            synth_shape_folder(data)
        # more steps per second than the default batch buys: small pictures learn from many small steps
        load_recipe("train_image.py").main(train)

    gen = load_recipe(f"generate_{modality}.py")
    made: dict[str, list[Path]] = {}
    for label in classes:
        extra = {"audio": ["--spectrogram"], "video": ["--gif"], "image": []}[modality]  # training length
        made[label] = gen.main(
            ["--ckpt", str(run), "--num", str(args.num), "--label", label, "--seed", "0", "--quiet",
             "--guidance", str(args.guidance),
             "--overwrite", "--out", str(samples / label), *extra, *common]
        )  # fmt: skip
    overview = write_overview(modality, made, samples)
    print(f"demo {modality}: {DEMOS[modality][1]}", flush=True)
    print(f"overview: {overview}; training loss: {run / 'loss.png'}", flush=True)
    return samples


def write_overview(modality: str, made: dict[str, list[Path]], folder: Path) -> Path:
    """One picture of a demo's samples (rows by class) in ``folder``: stacked spectrograms (audio), a grid of
    enlarged images, or an enlarged GIF of all clips plus a PNG of their frames (video)."""
    import imageio.v3 as iio

    from multidiff.io import read_video, write_image, write_video
    from multidiff.plots import image_grid, video_grid, video_strip

    if modality == "audio":
        pngs = [paths[0].with_suffix(".png") for paths in made.values()]
        images = [iio.imread(p)[..., :3] for p in pngs]
        width = max(im.shape[1] for im in images)
        stacked = np.concatenate(
            [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255) for im in images]
        )
        return write_image(folder / "overview.png", stacked)
    per_row = max(len(p) for p in made.values())
    if modality == "image":
        images = np.stack([iio.imread(p)[..., :3] for paths in made.values() for p in paths])
        return write_image(
            folder / "overview.png", image_grid(images, per_row, scale=max(1, 96 // images.shape[1]))
        )
    clips = np.stack([read_video(p)[0].numpy()[..., :3] for paths in made.values() for p in paths])
    scale = max(1, 96 // clips.shape[2])
    write_image(folder / "overview.png", video_strip(clips, scale=max(1, scale // 2)))
    return write_video(folder / "overview.gif", video_grid(clips, per_row, scale=scale), fps=6)
