"""Generate videos with a trained video diffusion model.

    python recipes/generate_video.py --ckpt RUN --num 4 --frames 16 --out samples/
    python recipes/generate_video.py --ckpt RUN --num 2 --frames 16 --first-frame photo.png --out i2v/
    python recipes/generate_video.py --ckpt RUN --num 2 --frames 32 --continue clip.mp4 --out longer/
    python recipes/generate_video.py --ckpt RUN --frames 9 --first-frame a.png --last-frame b.png --out tween/
    python recipes/generate_video.py --ckpt RUN --num 4 --prompt "a red ball bouncing" --guidance 4 --out red/

``--ckpt`` takes a run folder (its ``pipeline/``, else the latest checkpoint's), or a pipeline folder.
More frames than the training clips are generated with overlapping temporal windows. Video k is drawn
with seed ``--seed + k``, so it is the same whatever ``--batch``. Files are mp4 (or gif with ``--gif``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from multidiff.cli import OneLineParser
from multidiff.data.common import resize_and_crop
from multidiff.generation import add_generate_options, check_extent, check_positive, load_for_generation
from multidiff.io import free_path, read_image, read_video, write_video
from multidiff.modalities.base import Extent
from multidiff.pipeline import VideoPipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings; sampler settings left unset come from the saved pipeline."""
    p = OneLineParser(prog="multidiff generate video", description=__doc__.split("\n\n")[0])
    add_generate_options(p, items="videos", files="video", batch=4, prompt=True)
    p.add_argument("--frames", type=int, help="frames per video (default: the training length)")
    p.add_argument("--size", type=int, help="frame height and width (default: the training size)")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written files")
    p.add_argument("--first-frame", help="image-to-video: this image is the first frame")
    p.add_argument("--last-frame", help="interpolation (with --first-frame): this image is the last frame")
    p.add_argument("--continue", dest="cont", help="continue this video to --frames frames")
    p.add_argument("--decode-chunk", type=int, help="frames per VAE decode call (lower if out of memory)")
    p.add_argument("--gif", action="store_true", help="write gif instead of mp4")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    """Generate and write ``--num`` videos; returns their paths."""
    args = parse_args(argv)
    if args.cont and args.first_frame:
        raise ValueError("use either --continue or --first-frame, not both")
    if args.last_frame and not args.first_frame:
        raise ValueError("--last-frame needs --first-frame")
    check_positive(args, "size", "frames", "fps", "decode_chunk")  # before sampling, not after it
    loaded = load_for_generation(args, VideoPipeline)  # threads, counts, device, pipeline, base seed
    pipe, folder, seed = loaded.pipe, loaded.folder, loaded.seed
    size = (args.size, args.size) if args.size else pipe.size
    if size is None:
        raise ValueError("pass --size (the pipeline records no training size)")
    frames = args.frames if args.frames is not None else pipe.window
    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if not frames:
        raise ValueError("pass --frames")
    check_extent(pipe, args, Extent(frames=frames, size=size))

    # Known frames (resized and centre-cropped to the frame size) and the mask of the ones kept.
    known = mask = None
    if args.last_frame and frames < 2:
        raise ValueError(f"--last-frame needs --frames >= 2 (a first and a last frame), got {frames}")
    if args.first_frame:
        first = resize_and_crop(read_image(args.first_frame)[None], size)  # (1, H, W, C)
        known, mask = torch.zeros((frames, *first.shape[1:]), dtype=torch.uint8), torch.zeros(frames)
        known[0], mask[0] = first[0], 1
        if args.last_frame:
            known[-1] = resize_and_crop(read_image(args.last_frame)[None], size)[0]
            mask[-1] = 1
    elif args.cont:
        clip, _ = read_video(args.cont, max_frames=frames)
        if clip.shape[0] >= frames:
            raise ValueError(
                f"--continue: {args.cont} has {frames} frames or more; ask for more frames than it has with --frames"
            )
        known = resize_and_crop(clip, size)  # (F', H, W, C)
        mask = torch.ones(known.shape[0])
    if known is not None and known.shape[-1] != pipe.adapter.config.channels:
        known = known[..., : pipe.adapter.config.channels]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "gif" if args.gif else "mp4"
    paths: list[Path] = []
    padded = (
        ""
        if args.gif or not (size[0] % 2 or size[1] % 2)
        else (
            f" (mp4 needs even sizes: written padded to {size[0] + size[0] % 2}x{size[1] + size[1] % 2} by "
            "repeating the last row/column; --gif keeps the size)"
        )
    )
    print(
        f"{folder}: {args.num} video(s) of {frames} frames at {size[0]}x{size[1]}{padded}, seed {seed}",
        flush=True,
    )
    for start in range(0, args.num, args.batch):
        n = min(args.batch, args.num - start)
        videos = pipe.generate(
            n, frames, size, steps=args.steps, sampler=args.sampler, guidance=args.guidance, label=args.label,
            prompt=args.prompt, seed=seed + start, known=known, mask=mask, decode_chunk=args.decode_chunk,
            progress=not args.quiet,
        )  # fmt: skip
        for k in range(n):
            path = free_path(out / f"sample-{start + k:03d}-seed{seed + start + k}.{suffix}", args.overwrite)
            paths.append(write_video(path, videos[k], fps=args.fps))
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "generate video"))
