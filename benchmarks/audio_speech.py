"""Audio end to end on a GPU: train on an offline speech set, then time and judge generation (issue 4).

    python recipes/data/make_speech.py --out SPEECH --per-word 160 --heldout-per-word 40 \\
        --sample-rate 16000 --seconds 1.0 --format flac
    python benchmarks/audio_speech.py --data SPEECH --out OUT [--minutes 3.5] [--vocoder HIFIGAN_DIR]
    python benchmarks/audio_speech.py --data SPEECH --out OUT --tiny --device cpu      # a smoke run

Stages, each printed as it goes; everything lands in ``OUT/audio_speech.json`` and a markdown table in
``OUT/audio_speech.md``:

1. **Train** ``recipes/train_audio.py`` (class labels = the spoken word) on ``SPEECH/train`` for
   ``--minutes`` of wall time (``--max-minutes``); throughput is the median of the run log's
   ``samples_per_s`` after the first tenth of the log (warm-up and the first batches excluded).
2. **Real-time factor**: generation time over the duration of the audio produced, sampler and vocoder
   included (``AudioPipeline.generate``), for one clip at a time and for a batch, with Griffin-Lim (the
   default, no weights) and, with ``--vocoder``, a HiFi-GAN generator from a local folder.
3. **Quality against held-out clips**: a small CNN word classifier is trained on the log-mels of the real
   training clips (no pretrained network may be fetched); its penultimate features give Fréchet
   distances (:func:`multidiff.metrics.frechet_distance`) between ``SPEECH/heldout`` and (a) the
   generated clips, each vocoder's waveform re-analysed to a log-mel, (b) the generated log-mels
   themselves (no vocoder), and two floors: real training clips, and the held-out clips resynthesised by
   the vocoder. Also the share of generated clips that the classifier hears as the word asked for, and a
   mel-statistics distance (mean absolute difference of the per-bin mean and std of the log-mel).
   Every set has the same number of clips per word, since a Fréchet distance's bias depends on the count.
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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _e2e import steady_throughput, timed_generate  # noqa: E402

from multidiff.cli import load_recipe  # noqa: E402
from multidiff.metrics import frechet_distance  # noqa: E402
from multidiff.modalities.audio import LogMel, MelAdapter, MelSpec  # noqa: E402
from multidiff.modalities.vocoders import GriffinLim, load_hifigan  # noqa: E402
from multidiff.models import save_half  # noqa: E402
from multidiff.pipeline import AudioPipeline  # noqa: E402
from multidiff.train import read_log  # noqa: E402

AUDIO_EXTS = (".wav", ".flac", ".ogg")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", required=True, help="folder made by recipes/data/make_speech.py (train/, heldout/)"
    )
    p.add_argument("--out", required=True, help="results folder (the training run goes to OUT/run)")
    p.add_argument("--minutes", type=float, default=3.5, help="training wall time")
    p.add_argument("--preset", default="compact", help="train_audio preset")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length (training and generation)")
    p.add_argument("--vocoder", help="local HiFi-GAN folder or file, timed and judged beside Griffin-Lim")
    p.add_argument("--sample-steps", type=int, default=32)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--gen-batch", type=int, default=100, help="clips per batch for the batched timing")
    p.add_argument("--classifier-epochs", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=8, help="data-loading processes for training")
    p.add_argument("--seed", type=int, default=0, help="train_audio --seed")
    p.add_argument("--p-mean", type=float, help="train_audio --p-mean (mean of ln σ in training)")
    p.add_argument("--init", help="fine-tune from this run or pipeline folder (train_audio --init)")
    p.add_argument("--lora", type=int, help="train a LoRA of this rank on top of --init (train_audio --lora)")
    p.add_argument(
        "--judge-extra",
        nargs="+",
        default=[],
        help="more folders of clips that also train the word classifier",
    )
    p.add_argument(
        "--bundle", help="also write the trained pipeline here in float16 (multidiff.models.save_half)"
    )
    p.add_argument("--tiny", action="store_true", help="a CPU smoke run: tiny preset, seconds of training")
    args = p.parse_args(argv)
    if args.tiny:
        args.preset, args.batch, args.minutes, args.sample_steps, args.warmup = "tiny", 8, 0.3, 4, 10
        args.gen_batch, args.classifier_epochs, args.workers = 10, 2, 0
    return args


# --------------------------------------------------------------------------------------------------- data
def read_split(folder: Path, spec: MelSpec, seconds: float) -> tuple[Tensor, list[str]]:
    """Every clip of a split as waves ``[N, 1, S]`` at the spec's rate (cut or zero-padded to ``seconds``)
    and its word (the subfolder name)."""
    from multidiff.io import read_audio

    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_EXTS)
    if not files:
        raise SystemExit(f"error: no audio files in {folder}")
    n = int(round(seconds * spec.sample_rate))

    def load(f: Path) -> Tensor:
        wave, _ = read_audio(f, sample_rate=spec.sample_rate, mono=True)  # (1, S')
        return F.pad(wave, (0, max(0, n - wave.shape[-1])))[..., :n]

    with ThreadPoolExecutor(8) as pool:
        waves = list(pool.map(load, files))
    return torch.stack(waves), [f.parent.name for f in files]


def per_word(words: list[str], k: int) -> list[int]:
    """Indices of the first ``k`` clips of every word (equal counts per word across sets)."""
    seen: dict[str, int] = {}
    out = []
    for i, w in enumerate(words):
        if seen.get(w, 0) < k:
            seen[w] = seen.get(w, 0) + 1
            out.append(i)
    return out


# --------------------------------------------------------------------------------------------------- judge
class WordNet(nn.Module):
    """A small CNN over log-mels ``[B, 1, M, T]``: four conv stages, global average pool, a 128-d feature."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        chans = (1, width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [
                nn.Conv2d(a, b, 3, padding=1),
                nn.BatchNorm2d(b),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).mean((2, 3))  # (B, D)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, K)


class Judge:
    """The word classifier with its input normalisation (mean and std of the training log-mels)."""

    def __init__(self, net: WordNet, mean: float, std: float) -> None:
        self.net, self.mean, self.std = net.eval(), mean, std

    @torch.no_grad()
    def run(self, log_mel: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
        """Features ``[N, D]`` and predicted classes ``[N]`` of log-mels ``[N, 1, M, T]``."""
        feats, preds = [], []
        dev = next(self.net.parameters()).device
        for i in range(0, log_mel.shape[0], batch):
            x = (log_mel[i : i + batch].to(dev) - self.mean) / self.std
            f = self.net.features(x)
            feats.append(f.float().cpu())
            preds.append(self.net.head(f).argmax(1).cpu())
        return torch.cat(feats), torch.cat(preds)


def train_judge(mel: Tensor, labels: Tensor, num_classes: int, epochs: int, device: torch.device) -> Judge:
    """Adam, batch 64, random time shifts of up to 8 frames as augmentation."""
    torch.manual_seed(0)
    mean, std = float(mel.mean()), float(mel.std())
    net = WordNet(num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x_all = ((mel - mean) / std).to(device)
    y_all = labels.to(device)
    g = torch.Generator().manual_seed(0)
    steps = epochs * ((len(x_all) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=g).to(device)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            shift = int(torch.randint(-8, 9, (), generator=g))
            x = torch.roll(x_all[idx], shift, dims=-1)
            loss = F.cross_entropy(net(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return Judge(net, mean, std)


def mel_stats_distance(a: Tensor, b: Tensor) -> float:
    """Mean over mel bins of |Δ mean| + |Δ std| of log-mels ``[N, 1, M, T]`` (natural-log units)."""
    fa, fb = a.transpose(0, 2).flatten(1), b.transpose(0, 2).flatten(1)  # (M, N*T)
    return float(((fa.mean(1) - fb.mean(1)).abs() + (fa.std(1) - fb.std(1)).abs()).mean())


def trainable_params(run: Path, pipe: AudioPipeline) -> int:
    """Parameters the run trained: the LoRA's (``pipeline/lora/adapter.safetensors``) or the whole denoiser's."""
    lora = run / "pipeline" / "lora" / "adapter.safetensors"
    if lora.is_file():
        from safetensors.torch import load_file

        return sum(t.numel() for t in load_file(str(lora)).values())
    return sum(p.numel() for p in pipe.denoiser.parameters())


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    data = Path(args.data)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "settings": {k: v for k, v in vars(args).items()},
    }

    # 1. train
    run = out / "run"
    trainer = load_recipe("train_audio.py")
    print(f"[train] {args.preset} on {data / 'train'} for {args.minutes} min", flush=True)
    t0 = time.perf_counter()
    trainer.main(
        ["--data", str(data / "train"), "--out", str(run), "--preset", args.preset, "--labels",
         "--seconds", str(args.seconds), "--batch", str(args.batch), "--lr", str(args.lr), "--warmup", str(args.warmup),
         "--steps", str(10**7), "--max-minutes", str(args.minutes), "--ckpt-every", str(10**7),
         "--preview-every", "0", "--log-every", "25" if not args.tiny else "2",
         "--workers", str(args.workers), "--device", str(device),
         "--sample-steps", str(args.sample_steps), "--sampler", args.sampler, "--seed", str(args.seed),
         *(["--p-mean", str(args.p_mean)] if args.p_mean is not None else []),
         *(["--init", args.init] if args.init else []), *(["--lora", str(args.lora)] if args.lora else [])]
    )  # fmt: skip
    train_wall = time.perf_counter() - t0
    log = [r for r in read_log(run) if "samples_per_s" in r]
    pipe = AudioPipeline.from_pretrained(run / "pipeline", device=device)
    if args.bundle:
        save_half(run / "pipeline", args.bundle)
    result["train"] = {
        "steps": log[-1]["step"] if log else 0,
        "wall_s": train_wall,
        "samples_per_s": steady_throughput(run),
        "final_loss": statistics.mean(r["loss"] for r in log[-5:]) if log else None,
        "params_M": sum(p.numel() for p in pipe.denoiser.parameters()) / 1e6,
        "trainable_params_M": trainable_params(run, pipe) / 1e6,
        "peak_mem_GiB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    print(f"[train] {result['train']}", flush=True)

    # 2. real-time factor, each vocoder: one clip at a time (latency) and a batch (throughput)
    adapter = pipe.adapter
    assert isinstance(adapter, MelAdapter)
    spec = adapter.spec
    vocoders: dict[str, nn.Module] = {"griffin_lim": GriffinLim(spec)}
    if args.vocoder:
        hifigan = load_hifigan(args.vocoder)
        if hifigan.spec == spec:
            vocoders["hifigan"] = hifigan
        else:  # e.g. the tiny preset's 16 kHz mel
            print(f"[rtf] skipping --vocoder: built for {hifigan.spec}, the model uses {spec}", flush=True)
    words = pipe.labels or []
    gen_kw = dict(seconds=args.seconds, steps=args.sample_steps, sampler=args.sampler, guidance=args.guidance)
    heldout_wave, heldout_words = read_split(data / "heldout", spec, args.seconds)
    k = min(heldout_words.count(w) for w in words)
    held_idx = per_word(heldout_words, k)
    heldout_wave, heldout_words = heldout_wave[held_idx], [heldout_words[i] for i in held_idx]
    gen_labels = [words[i % len(words)] for i in range(k * len(words))]
    result["rtf"], waves = {}, {}
    for name, voc in vocoders.items():
        pipe.adapter = MelAdapter(adapter.config, voc, mean=adapter.mean, std=adapter.std).to(device).eval()
        timed_generate(pipe, device, num=1, label=words[0], seed=0, **gen_kw)  # warm-up
        single = [timed_generate(pipe, device, num=1, label=words[i], seed=i, **gen_kw)[1] for i in range(3)]
        chunks, batched = [], 0.0
        for i in range(0, len(gen_labels), args.gen_batch):
            wave, dt = timed_generate(
                pipe, device, num=len(gen_labels[i : i + args.gen_batch]), label=gen_labels[i : i + args.gen_batch],
                seed=10_000 + i, **gen_kw,
            )  # fmt: skip
            chunks.append(wave.cpu())
            batched += dt
        waves[name] = torch.cat(chunks)  # (N, 1, S)
        audio_s = args.seconds * len(gen_labels)
        result["rtf"][name] = {
            "one_clip_s": statistics.median(single),
            "rtf_one_clip": statistics.median(single) / args.seconds,
            "batch": args.gen_batch,
            "rtf_batched": batched / audio_s,
            "clips": len(gen_labels),
        }
        print(f"[rtf] {name}: {result['rtf'][name]}", flush=True)
    pipe.adapter = adapter
    with torch.no_grad():  # the generated log-mels themselves, no vocoder: same seeds as above
        latents = torch.cat(
            [
                pipe.sample(
                    len(gen_labels[i : i + args.gen_batch]), adapter.latent_shape(args.seconds),
                    label=gen_labels[i : i + args.gen_batch], seed=10_000 + i, progress=False,
                    steps=args.sample_steps, sampler=args.sampler, guidance=args.guidance,
                ).cpu()
                for i in range(0, len(gen_labels), args.gen_batch)
            ]
        )  # fmt: skip
    gen_mel_direct = adapter.cpu().denormalise(latents)  # (N, 1, M, T)

    # 3. quality: a word classifier trained on the real training clips; features of every set
    logmel = LogMel(spec)
    to_mel = lambda w: torch.cat([logmel(w[i : i + 256]) for i in range(0, len(w), 256)])  # noqa: E731
    judge_sets = [read_split(Path(d), spec, args.seconds) for d in [data / "train", *args.judge_extra]]
    train_wave, train_words = torch.cat([w for w, _ in judge_sets]), [x for _, ws in judge_sets for x in ws]
    index = {w: i for i, w in enumerate(words)}
    train_mel = to_mel(train_wave)
    t0 = time.perf_counter()
    judge = train_judge(
        train_mel, torch.tensor([index[w] for w in train_words]), len(words), args.classifier_epochs, device
    )
    held_mel = to_mel(heldout_wave)
    held_feat, held_pred = judge.run(held_mel)
    held_y = torch.tensor([index[w] for w in heldout_words])
    train_idx = per_word(train_words, k)
    train_y = torch.tensor([index[train_words[i]] for i in train_idx])
    gen_y = torch.tensor([index[w] for w in gen_labels])
    sets: dict[str, tuple[Tensor, Tensor]] = {"real train clips (floor)": (train_mel[train_idx], train_y)}
    for name, voc in vocoders.items():
        voc = voc.to(device).eval()
        with torch.no_grad():
            resynth = torch.cat(
                [voc(held_mel[i : i + 64, 0].to(device)).cpu() for i in range(0, len(held_mel), 64)]
            )[:, None]  # (N, 1, S')
        resynth_mel = to_mel(resynth[..., : heldout_wave.shape[-1]])
        sets[f"held-out resynthesised by {name} (vocoder floor)"] = (resynth_mel, held_y)
        sets[f"generated, {name}"] = (to_mel(waves[name]), gen_y)
    sets["generated log-mel, no vocoder"] = (gen_mel_direct, gen_y)
    result["quality"] = {
        "classifier_heldout_accuracy": float((held_pred == held_y).float().mean()),
        "classifier_train_s": time.perf_counter() - t0,
        "clips_per_set": len(held_idx),
        "rows": {},
    }
    for name, (mel, y) in sets.items():
        feat, pred = judge.run(mel)
        result["quality"]["rows"][name] = {
            "frechet": frechet_distance(feat, held_feat),
            "accuracy": float((pred == y).float().mean()),
            "mel_stats": mel_stats_distance(mel, held_mel),
        }
        print(f"[quality] {name}: {result['quality']['rows'][name]}", flush=True)

    # a few clips to listen to
    from multidiff.io import write_audio

    for i in range(min(len(words), 10)):
        for name in waves:
            write_audio(out / f"sample-{name}-{gen_labels[i]}.wav", waves[name][i], spec.sample_rate)
    (out / "audio_speech.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "audio_speech.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    return result


def markdown(r: dict[str, Any]) -> str:
    t, s = r["train"], r["settings"]
    lines = [
        f"Device: {r['device']}, torch {r['torch']}, {r['date']}. Preset `{s['preset']}` "
        f"({t['params_M']:.1f}M parameters), batch {s['batch']}, {s['seconds']} s clips, {t['steps']} steps in "
        f"{t['wall_s'] / 60:.1f} min.",
        "",
        "| training | value |",
        "|---|---|",
        f"| throughput (clips/s, median after warm-up) | {t['samples_per_s']:.0f} |",
        f"| peak GPU memory (GiB) | {t['peak_mem_GiB']:.2f} |" if t["peak_mem_GiB"] is not None else None,
        f"| final loss | {t['final_loss']:.4f} |",
        "",
        f"Generation: `{s['sampler']}`, {s['sample_steps']} steps, guidance {s['guidance']} (two model "
        "evaluations per step, batched), RTF = generation time / audio duration (lower is faster).",
        "",
        "| vocoder | one clip (s) | RTF, one clip | RTF, batch of " + str(s["gen_batch"]) + " |",
        "|---|---|---|---|",
    ]
    for name, v in r["rtf"].items():
        lines.append(f"| {name} | {v['one_clip_s']:.3f} | {v['rtf_one_clip']:.4f} | {v['rtf_batched']:.5f} |")
    q = r["quality"]
    lines += [
        "",
        f"Quality against {q['clips_per_set']} held-out clips (the same number per word in every set); word "
        f"classifier trained on the training clips, {q['classifier_heldout_accuracy']:.1%} accurate on the "
        "held-out clips:",
        "",
        "| set | Fréchet distance (classifier features) | heard as the word asked for | mel-statistics distance |",
        "|---|---|---|---|",
    ]
    for name, v in q["rows"].items():
        lines.append(f"| {name} | {v['frechet']:.3g} | {v['accuracy']:.1%} | {v['mel_stats']:.3f} |")
    return "\n".join(x for x in lines if x is not None) + "\n"


if __name__ == "__main__":
    main()
