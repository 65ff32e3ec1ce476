"""Images end to end on a GPU: train class-conditional digits, judge that samples show the digit asked for (issue 9).

    python benchmarks/image_digits.py --out OUT [--minutes 3] [--preset small] [--backbone unet|dit]
    python benchmarks/image_digits.py --out OUT --tiny --device cpu          # a CPU smoke run (~1 min)

The image counterpart of ``video_digits.py``, on the same glyphs and with the same judge:

1. **Data**: the moving-digit clips of ``video_digits.py`` (``--data``, made there if missing), one frame of
   each training clip written as a PNG into ``OUT/images/<digit>/`` (frame ``i % F`` of clip ``i``, so the
   digit sits anywhere in the frame); the held-out clips' frames are the reference set.
2. **Train** ``recipes/train_image.py --labels`` (class label = the digit) for ``--minutes`` of wall time.
3. **Judge**: the frame classifier of ``video_digits.py`` (a small CNN trained on every frame of the
   training clips; its accuracy on held-out frames is reported) classifies ``--gen-num`` generated images
   (label ``i % 10``): the share recognised as the digit asked for, and the Fréchet distance of its
   penultimate features to the held-out frames beside a real-vs-real floor (as many training frames).

Results: ``OUT/image_digits.json``, a markdown table in ``OUT/image_digits.md`` and ``OUT/samples.png``
(one row per digit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _e2e import start_result, steady_throughput  # noqa: E402
from video_digits import all_frames, clip_files, ensure_data, judge, read_split, train_classifier  # noqa: E402

from multidiff.cli import load_recipe  # noqa: E402
from multidiff.io import write_image  # noqa: E402
from multidiff.metrics import frechet_distance  # noqa: E402
from multidiff.pipeline import load_pipeline  # noqa: E402
from multidiff.train import read_log  # noqa: E402

GEN_SEED = 20_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="results folder (the training run goes to OUT/run)")
    p.add_argument("--data", help="folder of video_digits.py clips (train/, heldout/; made if missing)")
    p.add_argument("--train-clips", type=int, default=3000)
    p.add_argument("--heldout-clips", type=int, default=500)
    p.add_argument("--frames", type=int, default=16, help="frames per clip of the data (one is used)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--minutes", type=float, default=3.0, help="training wall time (--max-minutes)")
    p.add_argument("--preset", default="small")
    p.add_argument("--backbone", default="unet", choices=("unet", "dit"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--warmup", type=int, help="learning-rate warm-up steps (default: the preset's)")
    p.add_argument("--p-mean", type=float, help="train_image --p-mean (mean of ln σ in training)")
    p.add_argument("--gen-num", type=int, default=1000, help="generated images judged (label i %% 10)")
    p.add_argument("--gen-batch", type=int, default=250)
    p.add_argument("--sample-steps", type=int, default=32)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.5, 2.0], help="guidance scales judged")
    p.add_argument("--classifier-epochs", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--tiny", action="store_true", help="a CPU smoke run: tiny preset, seconds of training")
    args = p.parse_args(argv)
    if args.tiny:
        args.preset, args.size, args.frames, args.batch, args.minutes = "tiny", 16, 8, 16, 0.3
        args.train_clips, args.heldout_clips, args.gen_num, args.gen_batch = 200, 50, 20, 20
        args.sample_steps, args.classifier_epochs, args.workers = 4, 2, 0
    return args


def write_images(clips: list[Path], frames: torch.Tensor, out: Path) -> None:
    """Frame ``i % F`` of clip ``i`` as ``out/<digit>/img_<i>.png`` (grey replicated to RGB)."""
    num_frames = frames.shape[1]
    for i, f in enumerate(clips):
        folder = out / f.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        grey = frames[i, i % num_frames]  # (H, W) uint8
        write_image(folder / f"img_{i:05d}.png", grey[..., None].expand(-1, -1, 3).numpy())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    run, device, result = start_result(args, argv, __file__)
    out = run.parent
    cuda = device.type == "cuda"
    data = Path(args.data) if args.data else out / "data"

    # 1. data: one frame per training clip as an image; every frame of the held-out clips as reference
    ensure_data(data, args)
    train_files, held_files = clip_files(data / "train"), clip_files(data / "heldout")
    train_clips, train_digits = read_split(train_files, args.frames)  # (N, F, H, W) uint8
    held_clips, held_digits = read_split(held_files, args.frames)
    images = out / "images"
    if not images.exists():
        write_images(train_files, train_clips, images)
    result["data"] = {"train_images": len(train_files), "heldout_frames": held_clips.shape[0] * args.frames}

    # 2. train
    trainer = load_recipe("train_image.py")
    t0 = time.perf_counter()
    extra = ["--lr", str(args.lr)] if args.lr else []
    extra += ["--warmup", str(args.warmup)] if args.warmup is not None else []
    extra += ["--p-mean", str(args.p_mean)] if args.p_mean is not None else []
    trainer.main(
        ["--data", str(images), "--out", str(run), "--preset", args.preset, "--backbone", args.backbone,
         "--labels", "--size", str(args.size), "--batch", str(args.batch), "--steps", str(10**7),
         "--max-minutes", str(args.minutes), "--ckpt-every", str(10**7), "--preview-every", "0",
         "--log-every", "25", "--workers", str(args.workers), "--device", str(device), *extra]
    )  # fmt: skip
    log = [r for r in read_log(run) if "samples_per_s" in r]
    result["train"] = {
        "steps": log[-1]["step"] if log else 0,
        "wall_s": time.perf_counter() - t0,
        "samples_per_s": steady_throughput(run),
        "final_loss": float(np.mean([r["loss"] for r in log[-5:]])) if log else None,
        "peak_mem_GiB": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }
    print(f"[train] {result['train']}", flush=True)

    # 3. judge
    net, info = train_classifier(
        all_frames(train_clips), train_digits.repeat_interleave(args.frames),
        epochs=args.classifier_epochs, batch=256, minutes=2.0, device=device,
    )  # fmt: skip
    held = all_frames(held_clips)
    held_feat, held_pred = judge(net, held)
    held_y = held_digits.repeat_interleave(args.frames)
    floor_idx = torch.randperm(train_clips.shape[0] * args.frames, generator=torch.Generator().manual_seed(0))
    floor_feat, _ = judge(net, all_frames(train_clips)[floor_idx[: args.gen_num]])
    result["judge"] = {**info, "heldout_accuracy": float((held_pred == held_y).float().mean())}
    result["floor_frechet"] = frechet_distance(floor_feat, held_feat)
    pipe = load_pipeline(run / "pipeline", device=device)
    names = pipe.labels or [str(d) for d in range(10)]
    asked = torch.tensor([i % 10 for i in range(args.gen_num)])
    result["guidance"] = {}
    for g in args.guidance:
        chunks = []
        for s in range(0, args.gen_num, args.gen_batch):
            idx = range(s, min(args.gen_num, s + args.gen_batch))
            with torch.no_grad():
                imgs = pipe.generate(
                    len(idx), (args.size, args.size), label=[names.index(str(i % 10)) for i in idx],
                    steps=args.sample_steps, sampler=args.sampler, guidance=g, seed=GEN_SEED + s, progress=False,
                )  # fmt: skip  # (b, H, W, C) uint8
            chunks.append(imgs.cpu().float().mean(-1).round().to(torch.uint8))  # (b, H, W) grey
        gen = torch.cat(chunks)
        feat, pred = judge(net, gen)
        row = {
            "accuracy": float((pred == asked).float().mean()),
            "frechet": frechet_distance(feat, held_feat),
        }
        row["frechet_over_floor"] = row["frechet"] / result["floor_frechet"]
        result["guidance"][str(g)] = row
        print(f"[judge] guidance {g}: {row}", flush=True)
        if g == args.guidance[0]:  # a grid: one row per digit, ten samples each
            per = [gen[asked == d][:10] for d in range(10)]
            grid = torch.cat([torch.cat(list(r), dim=1) for r in per], dim=0)  # (10 H, 10 W)
            write_image(out / "samples.png", grid[..., None].expand(-1, -1, 3).numpy())
    (out / "image_digits.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "image_digits.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    return result


def markdown(r: dict[str, Any]) -> str:
    t = r["train"]
    lines = [
        f"{r['device']}, torch {r['torch']}, {r['date']}: `{r['command']}`",
        "",
        f"training: {t['steps']} steps, {t['samples_per_s'] or 0:.0f} images/s, final loss {t['final_loss']}",
        f"judge: held-out frame accuracy {r['judge']['heldout_accuracy']:.3f}; FD floor {r['floor_frechet']:.2f}",
        "",
        "| guidance | recognised as asked | FD | FD / floor |",
        "|---|---|---|---|",
    ]
    for g, row in r["guidance"].items():
        lines.append(
            f"| {g} | {row['accuracy']:.1%} | {row['frechet']:.2f} | {row['frechet_over_floor']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
