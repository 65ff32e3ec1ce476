"""Video end to end on a GPU: train on moving digits, then time and judge generation (issue 5).

    python benchmarks/video_digits.py --out OUT [--minutes 3.5] [--preset small] [--size 32] [--frames 16]
    python benchmarks/video_digits.py --out OUT --tiny --device cpu          # a CPU smoke run (~1 min)

Stages, each printed as it goes; everything lands in ``OUT/video_digits.json``, a markdown table in
``OUT/video_digits.md`` and a GIF grid in ``OUT/samples.gif`` (top row generated, one per digit; bottom
row held-out clips):

1. **Data**: moving-digit clips made in code from scikit-learn's bundled 8x8 digits
   (``recipes/data/make_digits_video.py``), GIF files: ``DATA/train`` (seed 0) and ``DATA/heldout``
   (seed 1, other draws of the same 1797 glyphs). ``--data`` defaults to ``OUT/data``; splits already
   there are reused. GIFs are written by pillow alone (``multidiff.io.write_video``), so this runs on
   machines without ffmpeg or the ``imageio_ffmpeg`` package.
2. **Train** ``recipes/train_video.py`` (class labels = the digit) for ``--minutes`` of wall time
   (``--max-minutes``); throughput is the median of the run log's ``samples_per_s`` after the first
   tenth of the log (warm-up and the first batches excluded).
3. **Generation time** (``VideoPipeline.generate``, sampler and decoding included): one video of
   ``--frames`` frames at batch 1 (median of 3 after a warm-up call), and the ``--gen-num`` evaluation
   videos (label ``i % 10``, video ``i`` seeded ``GEN_SEED + i``) in batches of ``--gen-batch``, per video.
4. **Quality**: a small CNN digit classifier trained on single frames of the training clips (no
   pretrained network may be fetched); its penultimate features give per-frame Fréchet distances
   (:func:`multidiff.metrics.frechet_distance`) to all frames of the held-out clips, for the generated
   videos and for a real-vs-real floor: as many training clips, with the same digits, which the
   classifier did not see. Beside it: the share of frames classified as the digit asked for, and
   temporal figures, each with the real clips' value next to it: identity consistency (share of a
   video's frames classified as its majority digit), motion (mean absolute difference of consecutive
   frames), glyph-mass variation (std / mean of a frame's total brightness over a video; 0 for real
   clips, whose digit never leaves the frame), centroid speed and centroid jitter (mean |second
   difference| of the brightness centroid: real digits glide in straight lines, bounces aside).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _e2e import start_result, steady_throughput, timed_generate  # noqa: E402

from multidiff.cli import load_recipe  # noqa: E402
from multidiff.io import read_video, write_video  # noqa: E402
from multidiff.metrics import frechet_distance  # noqa: E402
from multidiff.models import save_half  # noqa: E402
from multidiff.pipeline import VideoPipeline  # noqa: E402
from multidiff.train import latest_checkpoint, read_log  # noqa: E402

DATA_FPS = 8.0  # make_digits_video's default rate
HELDOUT_SEED = 1  # the training split uses seed 0
GEN_SEED = 10_000  # evaluation video i uses GEN_SEED + i


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="results folder (the training run goes to OUT/run)")
    p.add_argument("--data", help="folder with train/ and heldout/ (made there if missing; default OUT/data)")
    p.add_argument("--train-clips", type=int, default=3000)
    p.add_argument("--heldout-clips", type=int, default=500)
    p.add_argument("--minutes", type=float, default=3.5, help="training wall time (--max-minutes)")
    p.add_argument("--preset", default="small", help="train_video preset")
    p.add_argument("--size", type=int, default=32, help="frame height and width")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (training and generation)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--warmup", type=int, help="learning-rate warm-up steps (default: the preset's)")
    p.add_argument("--gen-num", type=int, default=200, help="generated videos judged (label i %% 10)")
    p.add_argument("--gen-batch", type=int, default=100, help="videos per call for the batched timing")
    p.add_argument("--sample-steps", type=int, default=32)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        help="classifier-free guidance scale(s) (1: off); each is generated and judged (the first is timed); "
        "default: the trained pipeline's own (1.5 for the recipe's models)",
    )
    p.add_argument("--backbone", default="unet", choices=("unet", "dit"))
    p.add_argument("--vae", help="train on the latents of this local AutoencoderKL (train_video --vae)")
    p.add_argument("--patch", type=int, help="train_video --patch (the DiT's spatial patch)")
    p.add_argument(
        "--bundle", help="also write the trained pipeline here in float16 (multidiff.models.save_half)"
    )
    p.add_argument("--steps", type=int, help="train this many steps (default: as many as --minutes allows)")
    p.add_argument("--p-none", type=float, help="train_video --p-none (share of clips with no known frame)")
    p.add_argument("--p-mean", type=float, help="train_video --p-mean (mean of ln σ in training)")
    p.add_argument("--p-std", type=float, help="train_video --p-std")
    p.add_argument("--label-dropout", type=float, help="train_video --label-dropout")
    p.add_argument("--ema-decay", type=float, help="train_video --ema-decay")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="train_video --compile"
    )
    p.add_argument("--data-only", action="store_true", help="make the data splits and stop")
    p.add_argument(
        "--pipeline",
        help="judge this trained pipeline folder (a run's pipeline/ or a bundled model) instead of training",
    )
    p.add_argument("--classifier-epochs", type=int, default=4)
    p.add_argument("--classifier-batch", type=int, default=256)
    p.add_argument(
        "--classifier-minutes", type=float, default=1.5, help="stop the classifier early past this"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=8, help="data-loading processes for training")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 with --tiny)")
    p.add_argument("--tiny", action="store_true", help="a CPU smoke run: tiny preset, seconds of training")
    args = p.parse_args(argv)
    if args.tiny:
        args.preset, args.size, args.frames, args.batch, args.minutes = "tiny", 16, 8, 8, 0.5
        args.train_clips, args.heldout_clips, args.gen_num, args.gen_batch = 200, 50, 20, 10
        args.sample_steps, args.classifier_epochs, args.classifier_batch = 4, 3, 32
        args.workers, args.warmup = 0, 10
        args.threads = args.threads or 1
    if args.gen_num < 10 or args.train_clips <= args.gen_num or args.heldout_clips < 10:
        p.error("need --gen-num >= 10, --train-clips > --gen-num and --heldout-clips >= 10")
    return args


# --------------------------------------------------------------------------------------------------- data
def make_split(folder: Path, num: int, seed: int, frames: int, size: int) -> None:
    """``num`` GIF clips into ``folder/<digit>/`` with ``make_digits_video.py --format gif``."""
    maker = load_recipe("data/make_digits_video.py")
    maker.main(
        ["--out", str(folder), "--num", str(num), "--frames", str(frames), "--size", str(size),
         "--format", "gif", "--seed", str(seed), "--fps", str(DATA_FPS)]
    )  # fmt: skip


def clip_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/clip_*.gif"))


def ensure_data(data: Path, args: argparse.Namespace) -> dict[str, int]:
    """Make ``data/train`` and ``data/heldout`` unless they hold clips; check one clip's shape; returns
    the clip count of each split."""
    counts = {}
    for split, num, seed in (("train", args.train_clips, 0), ("heldout", args.heldout_clips, HELDOUT_SEED)):
        folder = data / split
        if not clip_files(folder):
            print(f"[data] making {num} {split} clips in {folder}", flush=True)
            make_split(folder, num, seed, args.frames, args.size)
        files = clip_files(folder)
        frames, _ = read_video(files[0])  # (F, H, W, 3)
        f, h, w, _ = frames.shape
        if f < args.frames or (h, w) != (args.size, args.size):
            raise SystemExit(
                f"error: {files[0]} has {f} frames of {h}x{w}; need >= {args.frames} of "
                f"{args.size}x{args.size} (use another --data)"
            )
        print(f"[data] {split}: {len(files)} clips in {folder}", flush=True)
        counts[split] = len(files)
    return counts


def to_grey(frames: Tensor) -> Tensor:
    """uint8 frames ``[..., H, W, C]`` -> float grey ``[..., H, W]`` in [0, 1] (mean of the channels)."""
    return frames.float().mean(-1) / 255.0


def read_split(files: list[Path], frames: int) -> tuple[Tensor, Tensor]:
    """Clips as grey uint8 ``[N, F, H, W]`` (the first ``frames`` frames) and digits ``[N]``."""

    def load(f: Path) -> Tensor:
        video, _ = read_video(f, max_frames=frames)  # (F, H, W, 3)
        return (to_grey(video) * 255).round().to(torch.uint8)  # (F, H, W)

    with ThreadPoolExecutor(8) as pool:
        clips = list(pool.map(load, files))
    return torch.stack(clips), torch.tensor([int(f.parent.name) for f in files])


def all_frames(clips: Tensor) -> Tensor:
    """Videos ``[V, F, H, W]`` -> frames ``[V * F, H, W]`` (labels follow with ``repeat_interleave(F)``)."""
    return clips.flatten(0, 1)


VAE_ROW = "train clips through the VAE (its ceiling)"


@torch.no_grad()
def vae_round_trip(adapter: Any, clips: Tensor, batch: int = 50) -> Tensor:
    """Grey uint8 clips ``[N, F, H, W]`` encoded and decoded by a latent model's own video adapter (its VAE),
    as grey uint8: the best any model on those latents can draw, judged like the generated clips."""
    device = next(adapter.parameters()).device
    out = []
    for i in range(0, clips.shape[0], batch):
        rgb = clips[i : i + batch, ..., None].expand(-1, -1, -1, -1, 3).to(device)  # (b, F, H, W, 3)
        frames = adapter.decode(adapter.encode(rgb), out_device="cpu")  # (b, F, H, W, 3) uint8
        out.append((to_grey(frames) * 255).round().to(torch.uint8))
    return torch.cat(out)


def clip_index(f: Path) -> int:
    """``i`` of ``clip_{i:05d}.gif`` (clip i shows digit i % 10)."""
    return int(f.stem.split("_")[-1])


# --------------------------------------------------------------------------------------------------- judge
class DigitNet(nn.Module):
    """A small CNN over grey frames ``[B, 1, H, W]``: three conv stages, a 2x2 pool (keeps where the digit
    is, roughly), a 128-d feature layer, a linear head over the 10 digits."""

    def __init__(self, width: int = 32, dim: int = 128) -> None:
        super().__init__()
        chans = (1, width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.feature = nn.Sequential(nn.Linear(4 * chans[-1], dim), nn.ReLU())
        self.head = nn.Linear(dim, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.feature(self.body(x))  # (B, D)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 10)


@torch.no_grad()
def judge(net: DigitNet, frames: Tensor, batch: int = 1024) -> tuple[Tensor, Tensor]:
    """Features ``[N, D]`` and predicted digits ``[N]`` of grey uint8 frames ``[N, H, W]``."""
    net.eval()
    dev = next(net.parameters()).device
    feats, preds = [], []
    for i in range(0, frames.shape[0], batch):
        x = frames[i : i + batch].to(dev)[:, None].float() / 255.0  # (b, 1, H, W)
        f = net.features(x)
        feats.append(f.float().cpu())
        preds.append(net.head(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def train_classifier(
    frames: Tensor, labels: Tensor, *, epochs: int, batch: int, minutes: float, device: torch.device
) -> tuple[DigitNet, dict[str, Any]]:
    """Adam over grey uint8 frames ``[N, H, W]`` with digits ``[N]``, cosine learning rate; stops early
    past ``minutes``."""
    torch.manual_seed(0)
    net = DigitNet().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x_all, y_all = frames.to(device), labels.to(device)
    g = torch.Generator().manual_seed(0)
    per_epoch = (len(x_all) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    t0, steps, stopped = time.perf_counter(), 0, False
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=g).to(device)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            x = x_all[idx][:, None].float() / 255.0  # (b, 1, H, W)
            loss = F.cross_entropy(net(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            if steps % 50 == 0 and time.perf_counter() - t0 > 60 * minutes:
                stopped = True
                break
        if stopped:
            break
    return net.eval(), {"steps": steps, "epochs": steps / per_epoch, "train_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------------- temporal
def identity_consistency(preds: Tensor) -> float:
    """Mean over videos of the share of frames predicted as the video's majority digit; ``preds [V, F]``."""
    majority = preds.mode(dim=1).values  # (V,)
    return float((preds == majority[:, None]).float().mean())


def temporal_figures(clips: Tensor) -> dict[str, float]:
    """Motion and stability of grey uint8 videos ``[V, F, H, W]`` (pixel values in [0, 1], positions in
    pixels): see the module docstring."""
    x = clips.float() / 255.0  # (V, F, H, W)
    v, f, h, w = x.shape
    motion = (x[:, 1:] - x[:, :-1]).abs().mean()
    mass = x.sum((2, 3))  # (V, F)
    mass_var = (mass.std(1) / mass.mean(1).clamp_min(1e-6)).mean()
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    total = mass.clamp_min(1e-6)
    centroid = torch.stack([(x * ys).sum((2, 3)) / total, (x * xs).sum((2, 3)) / total], -1)  # (V, F, 2)
    vel = centroid[:, 1:] - centroid[:, :-1]  # (V, F-1, 2)
    acc = vel[:, 1:] - vel[:, :-1]  # (V, F-2, 2)
    return {
        "motion": float(motion),
        "mass_variation": float(mass_var),
        "centroid_speed": float(vel.norm(dim=-1).mean()),
        "centroid_jitter": float(acc.norm(dim=-1).mean()) if f > 2 else float("nan"),
    }


def grid_video(rows: list[Tensor], scale: int = 2, gap: int = 2) -> np.ndarray:
    """Rows of grey uint8 videos (each ``[n, F, H, W]``, the same F, H, W) as one uint8 video
    ``[F, H', W', 3]``, enlarged ``scale`` times, videos ``gap`` pixels apart on grey."""
    n = max(r.shape[0] for r in rows)
    _, f, h, w = rows[0].shape
    hs, ws = h * scale, w * scale
    canvas = torch.full((f, len(rows) * (hs + gap) + gap, n * (ws + gap) + gap), 96, dtype=torch.uint8)
    for i, row in enumerate(rows):
        big = row.repeat_interleave(scale, 2).repeat_interleave(scale, 3)  # (n, F, hs, ws)
        for j in range(row.shape[0]):
            y, x = gap + i * (hs + gap), gap + j * (ws + gap)
            canvas[:, y : y + hs, x : x + ws] = big[j]
    return canvas[..., None].expand(-1, -1, -1, 3).contiguous().numpy()


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run, device, result = start_result(args, argv, __file__)
    out = run.parent
    cuda = device.type == "cuda"
    data = Path(args.data) if args.data else out / "data"
    t_start = time.perf_counter()
    print(json.dumps({k: result[k] for k in ("date", "torch", "device")}), flush=True)

    # 1. data
    t0 = time.perf_counter()
    counts = ensure_data(data, args)
    result["data"] = {"folder": str(data), "clips": counts, "make_s": time.perf_counter() - t0}
    if args.data_only:
        return result

    # 2. train (or load the pipeline to judge)
    if args.pipeline:
        pipe = VideoPipeline.from_pretrained(args.pipeline, device=device)
        result["train"] = {
            "pipeline": str(Path(args.pipeline).resolve()),
            "params_M": sum(p.numel() for p in pipe.denoiser.parameters()) / 1e6,
        }
    else:
        trainer = load_recipe("train_video.py")
        print(f"[train] {args.preset} on {data / 'train'} for {args.minutes} min", flush=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        trainer.main(
            ["--data", str(data / "train"), "--out", str(run), "--preset", args.preset, "--labels",
             "--size", str(args.size), "--frames", str(args.frames), "--batch", str(args.batch),
             *(["--warmup", str(args.warmup)] if args.warmup is not None else []),
             *(["--lr", str(args.lr)] if args.lr else []),
             "--steps", str(args.steps or 10**7), "--max-minutes", str(args.minutes), "--ckpt-every", str(10**7),
             "--backbone", args.backbone,
             *(["--vae", args.vae] if args.vae else []), *(["--patch", str(args.patch)] if args.patch else []),
             *[a for k in ("p_none", "p_mean", "p_std", "label_dropout", "ema_decay") if getattr(args, k) is not None
               for a in ("--" + k.replace("_", "-"), str(getattr(args, k)))],
             *([] if args.compile is None else ["--compile" if args.compile else "--no-compile"]),
             "--preview-every", "0", "--log-every", "2" if args.tiny else "25",
             "--workers", str(args.workers), "--device", str(device),
             *(["--threads", str(args.threads)] if args.threads else []),
             "--sample-steps", str(args.sample_steps), "--sampler", args.sampler]
        )  # fmt: skip
        train_wall = time.perf_counter() - t0
        log = [r for r in read_log(run) if "samples_per_s" in r]
        losses = [r["loss"] for r in log if isinstance(r.get("loss"), float)]
        train_peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        pipe = VideoPipeline.from_pretrained(run / "pipeline", device=device)
        if args.bundle:
            save_half(run / "pipeline", args.bundle)
        clips_per_s = steady_throughput(run) or float("nan")
        result["train"] = {
            "steps": ckpt.step if (ckpt := latest_checkpoint(run)) is not None else 0,
            "wall_s": train_wall,
            "clips_per_s": clips_per_s,
            "frames_per_s": clips_per_s * args.frames,
            "final_loss": statistics.mean(losses[-5:]) if losses else None,
            "params_M": sum(p.numel() for p in pipe.denoiser.parameters()) / 1e6,
            "peak_mem_GiB": train_peak,
        }
        print(f"[train] {result['train']}", flush=True)

    if args.guidance is None:
        args.guidance = [pipe.sampling.guidance]
        result["settings"]["guidance"] = args.guidance
    # 3. generation time: one video at batch 1 (latency), then the evaluation videos in batches
    gen_kw = dict(
        frames=args.frames,
        size=args.size,
        steps=args.sample_steps,
        sampler=args.sampler,
        guidance=args.guidance[0],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    timed_generate(pipe, device, num=1, label="0", seed=0, **gen_kw)  # warm-up
    single = [timed_generate(pipe, device, num=1, label="0", seed=1 + i, **gen_kw)[1] for i in range(3)]
    gen_labels = [i % 10 for i in range(args.gen_num)]
    gens: dict[float, Tensor] = {}
    for w in args.guidance:
        chunks, batched = [], 0.0
        for i in range(0, args.gen_num, args.gen_batch):
            labels = [str(k) for k in gen_labels[i : i + args.gen_batch]]  # class names = folder names
            videos, dt = timed_generate(
                pipe, device, num=len(labels), label=labels, seed=GEN_SEED + i, **{**gen_kw, "guidance": w}
            )
            chunks.append(videos)  # (b, F, H, W, C) uint8
            batched += dt
        gens[w] = (to_grey(torch.cat(chunks)) * 255).round().to(torch.uint8)  # (N, F, H, W)
        if w == args.guidance[0]:
            first_batched = batched
    gen = gens[args.guidance[0]]
    batched = first_batched
    result["generation"] = {
        "sampler": args.sampler,
        "steps": args.sample_steps,
        "guidance": args.guidance[0],
        "frames": args.frames,
        "one_video_s": statistics.median(single),
        "one_video_runs_s": single,
        "batch": args.gen_batch,
        "batched_s_per_video": batched / args.gen_num,
        "videos": args.gen_num,
        "peak_mem_GiB": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }
    print(f"[generate] {result['generation']}", flush=True)

    # 4. quality: a digit classifier on single frames of the training clips; floor clips held back from it
    t0 = time.perf_counter()
    train_files = clip_files(data / "train")
    floor_files = [f for f in train_files if clip_index(f) < args.gen_num]  # digits i % 10, as generated
    fit_files = [f for f in train_files if clip_index(f) >= args.gen_num]
    fit_clips, fit_y = read_split(fit_files, args.frames)  # (n, F, H, W), (n,)
    floor_clips, floor_y = read_split(floor_files, args.frames)
    held_clips, held_y = read_split(clip_files(data / "heldout"), args.frames)
    print(f"[quality] read {len(train_files)} train and {len(held_y)} held-out clips", flush=True)
    net, fit_info = train_classifier(
        all_frames(fit_clips),
        fit_y.repeat_interleave(args.frames),
        epochs=args.classifier_epochs,
        batch=args.classifier_batch,
        minutes=args.classifier_minutes,
        device=device,
    )
    held_feat, held_pred = judge(net, all_frames(held_clips))
    accuracy = float((held_pred == held_y.repeat_interleave(args.frames)).float().mean())
    print(f"[quality] classifier {fit_info}, held-out frame accuracy {accuracy:.4f}", flush=True)
    vae_rows = {}
    if (
        getattr(getattr(pipe.adapter, "image", None), "vae", None) is not None
    ):  # a latent model: its VAE's ceiling
        vae_rows[VAE_ROW] = (vae_round_trip(pipe.adapter, floor_clips), floor_y)
    sets = {
        "held-out clips (reference)": (held_clips, held_y),
        "train clips (real-vs-real floor)": (floor_clips, floor_y),
        **vae_rows,
        **{
            ("generated" if w == args.guidance[0] else f"generated, guidance {w:g}"): (
                g,
                torch.tensor(gen_labels),
            )
            for w, g in gens.items()
        },
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, (clips, y) in sets.items():
        feat, pred = judge(net, all_frames(clips))
        rows[name] = {
            "videos": clips.shape[0],
            "frechet": None if name.startswith("held-out") else frechet_distance(feat, held_feat),
            "accuracy": float((pred == y.repeat_interleave(args.frames)).float().mean()),
            "identity_consistency": identity_consistency(pred.view(clips.shape[0], -1)),
            **temporal_figures(clips),
        }
        print(f"[quality] {name}: {rows[name]}", flush=True)
    result["quality"] = {
        "classifier": {**fit_info, "heldout_frame_accuracy": accuracy, "frames": len(fit_y) * args.frames},
        "heldout_videos": len(held_y),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }

    # samples: generated (one per digit) over held-out clips of the same digits
    first = [int(torch.nonzero(held_y == d)[0]) for d in range(10) if (held_y == d).any()]
    write_video(out / "samples.gif", grid_video([gen[:10], held_clips[first]]), DATA_FPS)
    result["total_s"] = time.perf_counter() - t_start
    (out / "video_digits.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "video_digits.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    print(f"[done] {result['total_s']:.0f} s; results in {out}", flush=True)
    return result


def markdown(r: dict[str, Any]) -> str:
    s, t, g, q = r["settings"], r["train"], r["generation"], r["quality"]
    f = lambda v, fmt: "–" if v is None else format(v, fmt)  # noqa: E731
    lines = [
        f"Device: {r['device']}, torch {r['torch']}, {r['date']}. Command: `{r['command']}`.",
        "",
    ]
    if "pipeline" in t:  # --pipeline: a trained model judged, no training in this run
        lines += [
            f"Pipeline `{t['pipeline']}` ({t['params_M']:.1f}M parameters), judged without training; "
            f"{s['frames']} frames of {s['size']}x{s['size']} px.",
            "",
        ]
    else:
        lines += [
            f"Preset `{s['preset']}` ({t['params_M']:.1f}M parameters), {s['frames']} frames of "
            f"{s['size']}x{s['size']} px{' as VAE latents' if s.get('vae') else ''}, batch {s['batch']}, class-conditional; {t['steps']} steps in "
            f"{t['wall_s'] / 60:.1f} min (budget {s['minutes']} min, data scan and saving included), "
            f"{r['data']['clips']['train']} training clips.",
            "",
            "| training | value |",
            "|---|---|",
            f"| throughput (clips/s, median after warm-up) | {t['clips_per_s']:.1f} |",
            f"| throughput (frames/s) | {t['frames_per_s']:.0f} |",
            f"| peak GPU memory (GiB) | {f(t['peak_mem_GiB'], '.2f')} |",
            f"| final loss | {f(t['final_loss'], '.4f')} |",
            "",
        ]
    lines += [
        f"Backbone `{s.get('backbone', 'unet')}`. Generation: `{g['sampler']}`, {g['steps']} steps, guidance "
        f"{g['guidance']} (other scales in their own rows below), decoding included.",
        "",
        "| generation | value |",
        "|---|---|",
        f"| one {g['frames']}-frame video, batch 1 (s, median of 3) | {g['one_video_s']:.3f} |",
        f"| {g['videos']} videos in batches of {g['batch']} (s per video) | {g['batched_s_per_video']:.4f} |",
        f"| peak GPU memory while generating (GiB) | {f(g['peak_mem_GiB'], '.2f')} |",
        "",
        f"Quality against all frames of {q['heldout_videos']} held-out clips. Digit classifier (3 conv "
        f"stages, 128-d features) trained on {q['classifier']['frames']} frames of the other training "
        f"clips, {q['classifier']['epochs']:.1f} epochs: {q['classifier']['heldout_frame_accuracy']:.1%} "
        "accurate on held-out frames. FD: per-frame Fréchet distance in its features (lower is better); "
        "identity: share of a video's frames classified as its majority digit; motion: mean |frame t+1 - "
        "frame t| (pixels in [0, 1]); mass var.: std / mean of a frame's total brightness over a video; "
        "centroid speed and jitter (|2nd difference|) in pixels per frame (real digits sit on whole pixels, "
        "so their jitter is rounding and bounces). Closer to the held-out row is better.",
        "",
        "| set | videos | FD | frames classified as the digit asked for | identity | motion | mass var. | "
        "centroid speed | centroid jitter |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in q["rows"].items():
        lines.append(
            f"| {name} | {v['videos']} | {f(v['frechet'], '.3g')} | {v['accuracy']:.1%} | "
            f"{v['identity_consistency']:.3f} | {v['motion']:.4f} | {v['mass_variation']:.4f} | "
            f"{v['centroid_speed']:.2f} | {v['centroid_jitter']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
