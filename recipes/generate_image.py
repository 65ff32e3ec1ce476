"""Generate images with a trained image diffusion model.

    python recipes/generate_image.py --ckpt RUN --num 8 --out samples/
    python recipes/generate_image.py --ckpt RUN --num 4 --label cat --guidance 3 --out cats/
    python recipes/generate_image.py --ckpt RUN --num 2 --init photo.png --strength 0.5 --out varied/

``--ckpt`` takes a run folder (its ``pipeline/``, else the latest checkpoint's), or a pipeline folder.
Image k is drawn with seed ``--seed + k``, so it is the same whatever ``--batch``. Files are png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multidiff.cli import OneLineParser
from multidiff.data.common import resize_and_crop
from multidiff.generation import (
    add_generate_options,
    check_extent,
    check_positive,
    check_strength,
    load_for_generation,
)
from multidiff.io import free_path, read_image, write_image
from multidiff.modalities.base import Extent
from multidiff.pipeline import ImagePipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings; sampler settings left unset come from the saved pipeline."""
    p = OneLineParser(prog="multidiff generate image", description=__doc__.split("\n\n")[0])
    add_generate_options(p, items="images", files="png", batch=8, prompt=False)
    p.add_argument("--size", type=int, help="height and width (default: the training size)")
    p.add_argument("--init", help="image-to-image: vary this image (with --strength)")
    p.add_argument("--strength", type=float, help="image-to-image strength in (0, 1] (default 0.5; with --init)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    """Generate and write ``--num`` pngs; returns their paths."""
    args = parse_args(argv)
    check_positive(args, "size")
    check_strength(args, "image-to-image")
    loaded = load_for_generation(args, ImagePipeline)  # threads, counts, device, pipeline, base seed
    pipe, folder, seed = loaded.pipe, loaded.folder, loaded.seed
    size = (args.size, args.size) if args.size else pipe.size
    if size is None:
        raise ValueError("pass --size (the pipeline records no training size)")
    check_extent(pipe, args, Extent(size=size))
    init = None
    if args.init:
        init = resize_and_crop(read_image(args.init)[None], size)[0][..., : pipe.adapter.config.channels]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    print(f"{folder}: {args.num} image(s) of {size[0]}x{size[1]}, seed {seed}", flush=True)
    for start in range(0, args.num, args.batch):
        n = min(args.batch, args.num - start)
        images = pipe.generate(
            n, size, steps=args.steps, sampler=args.sampler, guidance=args.guidance, label=args.label,
            seed=seed + start, known=init, strength=args.strength if init is not None else None,
            progress=not args.quiet,
        )  # fmt: skip
        for k in range(n):
            path = free_path(out / f"sample-{start + k:03d}-seed{seed + start + k}.png", args.overwrite)
            paths.append(write_image(path, images[k]))
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "generate image"))
