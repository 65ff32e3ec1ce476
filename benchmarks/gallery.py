"""Remake the README gallery: pictures of what trained pipelines make, written into ``docs/gallery/``.

    python benchmarks/gallery.py runs/sounds runs/clips runs/images            # run or pipeline folders
    python benchmarks/gallery.py --model NAME --out docs/gallery               # bundled models by name
    python benchmarks/gallery.py runs/clips --num 2 --steps 32 --seed 0 --device cuda

For each pipeline (one sample per class, or ``--num`` samples of an unconditional model; sample k of a
class uses seed ``--seed + k``, so the pictures are the same every time):

* audio: ``NAME.png``, the samples' spectrograms one above the other (time in s, frequency in Hz, dB);
* video: ``NAME.gif``, the clips side by side and enlarged, and ``NAME-frames.png``, a row of frames per
  clip;
* image: ``NAME.png``, a grid of the samples, enlarged.

``docs/gallery/index.md`` lists every picture (those made by earlier runs stay listed) with a caption (model folder, classes, sampler settings), in
Markdown to paste into the README. Names are the run folder's name (``runs/clips/pipeline`` -> ``clips``)
unless ``--name`` gives them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _name(folder: Path) -> str:
    return folder.parent.name if folder.name == "pipeline" else folder.name


def _requests(pipe: Any, num: int, seed: int) -> list[tuple[str | None, int]]:
    """(label, seed) of each sample: every class once (its name), or ``num`` unconditional samples."""
    if pipe.num_classes:
        names = pipe.labels or [str(k) for k in range(pipe.num_classes)]
        return [(name, seed) for name in names for _ in range(num)]
    return [(None, seed + k) for k in range(num)]


def gallery_entry(
    pipe: Any, name: str, out: Path, *, num: int = 1, seed: int = 0, steps: int | None = None
) -> list[tuple[Path, str]]:
    """Write the pictures of one pipeline into ``out``; returns ``(path, caption)`` pairs."""
    import torch

    from multidiff.io import write_image, write_video
    from multidiff.plots import image_grid, spectrogram_png, video_grid, video_strip

    out.mkdir(parents=True, exist_ok=True)
    items = _requests(pipe, num, seed)
    per_row = num if pipe.num_classes else min(4, len(items))
    made: list[Any] = []
    with torch.no_grad():
        for k, (label, s) in enumerate(items):
            s = s + (k % num if pipe.num_classes else 0)
            made.append(pipe.generate(1, label=label, seed=s, steps=steps, progress=False)[0].cpu())
    what = ", ".join(dict.fromkeys(label or "unconditional" for label, _ in items))
    settings = (
        f"{pipe.sampling.sampler}, {steps or pipe.sampling.steps} steps, guidance {pipe.sampling.guidance:g}"
    )
    if pipe.modality == "audio":
        import imageio.v3 as iio

        parts = []
        for k, ((label, s), wave) in enumerate(zip(items, made)):
            tmp = out / f".{name}-{k}.png"
            spectrogram_png(
                wave, pipe.sample_rate, tmp, title=f"{label or 'sample'} (seed {s})", size=(420, 150)
            )
            parts.append(iio.imread(tmp)[..., :3])
            tmp.unlink()
        path = write_image(out / f"{name}.png", np.concatenate(parts, axis=0))
        return [(path, f"{name}: spectrograms of generated audio ({what}; {settings})")]
    if pipe.modality == "video":
        clips = np.stack([v.numpy()[..., :3] for v in made])
        scale = max(1, 96 // clips.shape[2])
        gif = write_video(out / f"{name}.gif", video_grid(clips, per_row, scale=scale), fps=6)
        strip = write_image(out / f"{name}-frames.png", video_strip(clips, scale=max(1, scale // 2)))
        return [
            (gif, f"{name}: generated clips ({what}; {settings})"),
            (strip, f"{name}: frames of each clip, left to right"),
        ]
    images = np.stack([im.numpy()[..., :3] for im in made])
    path = write_image(out / f"{name}.png", image_grid(images, per_row, scale=max(1, 96 // images.shape[1])))
    return [(path, f"{name}: generated images ({what}; {settings})")]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Write the gallery; returns the files written."""
    import torch

    from multidiff.models import resolve
    from multidiff.pipeline import load_pipeline
    from multidiff.train.checkpoint import resolve_pipeline_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", help="run, checkpoint or pipeline folders")
    p.add_argument("--model", action="append", default=[], help="a bundled model by name (repeatable)")
    p.add_argument("--name", action="append", default=[], help="file name of each pipeline, in order")
    p.add_argument("--out", default=str(ROOT / "docs" / "gallery"), help="folder (default docs/gallery)")
    p.add_argument("--num", type=int, default=1, help="samples per class (unconditional: samples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampler steps (default: each pipeline's)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    sources = [Path(f) for f in args.folders] + [resolve(m) for m in args.model]
    if not sources:
        p.error("give pipeline folders or --model NAME")
    if args.name and len(args.name) != len(sources):
        p.error(f"--name given {len(args.name)} times for {len(sources)} pipelines")
    out = Path(args.out)
    entries: list[tuple[Path, str]] = []
    for i, source in enumerate(sources):
        folder = resolve_pipeline_dir(source)
        pipe = load_pipeline(folder, device=torch.device(args.device))
        name = args.name[i] if args.name else _name(folder)
        entries += gallery_entry(pipe, name, out, num=args.num, seed=args.seed, steps=args.steps)
        print(
            f"{folder} -> {', '.join(str(e[0]) for e in entries[-2:] if e[0].stem.startswith(name))}",
            flush=True,
        )
    lines = [
        "# Gallery",
        "",
        "Made by `python benchmarks/gallery.py` (rerun it to remake every picture).",
        "",
    ]
    # pictures made earlier (other pipelines) keep their entries; those remade now are replaced
    made = {path.name: caption for path, caption in entries}
    index = out / "index.md"
    kept = [
        (m.group(2), m.group(1))
        for m in re.finditer(
            r"^!\[(.*)\]\((.*)\)$", index.read_text(encoding="utf-8") if index.is_file() else "", re.M
        )
        if m.group(2) not in made and (out / m.group(2)).is_file()
    ]
    lines += [f"![{caption}]({name})\n\n{caption}\n" for name, caption in [*kept, *made.items()]]
    index.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out / 'index.md'}")
    return [path for path, _ in entries]


if __name__ == "__main__":
    try:
        sys.exit(0 if main() else 1)
    except ValueError as err:  # a folder without a pipeline, an unknown model name
        sys.exit(f"gallery: error: {err}")
