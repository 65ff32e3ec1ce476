"""Generate audio clips with a trained mel diffusion model.

    python recipes/generate_audio.py --ckpt RUN --num 8 --seconds 4 --out samples/
    python recipes/generate_audio.py --ckpt RUN --num 4 --seconds 2 --label dog --guidance 3 --out dogs/
    python recipes/generate_audio.py --ckpt RUN --num 2 --seconds 6 --continue clip.wav --out more/
    python recipes/generate_audio.py --ckpt RUN --num 4 --prompt "a dog barking" --guidance 4 --out dogs/
    python recipes/generate_audio.py --ckpt RUN --num 2 --init clip.wav --strength 0.5 --out varied/
    python recipes/generate_audio.py --model NAME --num 2 --spectrogram --out samples/   # + a PNG per wav

``--ckpt`` takes a run folder (its ``pipeline/``, else the latest checkpoint's), or a pipeline folder;
``--model`` a bundled model by name (``multidiff models``). Clip k is drawn with seed ``--seed + k``, so it is the same whatever ``--batch``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multidiff.cli import OneLineParser
from multidiff.generation import add_generate_options, check_extent, check_strength, load_for_generation
from multidiff.io import free_path, read_audio, write_audio
from multidiff.modalities.base import Extent
from multidiff.pipeline import AudioPipeline
from multidiff.plots import spectrogram_png


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings; sampler settings left unset come from the saved pipeline."""
    p = OneLineParser(prog="multidiff generate audio", description=__doc__.split("\n\n")[0])
    add_generate_options(p, items="clips", files="wav", batch=8, prompt=True)
    p.add_argument(
        "--seconds", type=float, help="clip length (default: the training length, or the --init length)"
    )
    p.add_argument("--continue", dest="cont", help="continue this audio file to --seconds")
    p.add_argument("--init", help="audio-to-audio: vary this file (with --strength)")
    p.add_argument("--strength", type=float, help="audio-to-audio strength in (0, 1] (default 0.5; with --init)")
    p.add_argument(
        "--spectrogram",
        action="store_true",
        help="also write a spectrogram PNG beside each wav (time in s, frequency in Hz, level in dB)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    """Generate and write ``--num`` wavs; returns their paths."""
    args = parse_args(argv)
    if args.cont and args.init:
        raise ValueError("use either --continue or --init, not both")
    check_strength(args, "audio-to-audio")
    if args.seconds is not None and not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    loaded = load_for_generation(args, AudioPipeline)  # threads, counts, device, pipeline, base seed
    pipe, folder, seed = loaded.pipe, loaded.folder, loaded.seed
    sr = pipe.sample_rate

    # Inputs for continuation / audio-to-audio, resampled to the model's rate.
    source = args.cont or args.init
    clip = None
    if source:
        clip, _ = read_audio(source, sample_rate=sr, mono=pipe.channels == 1)
        clip = clip[: pipe.channels]
    seconds = args.seconds
    if seconds is None:
        seconds = clip.shape[-1] / sr if args.init else (pipe.window or 0) * pipe.adapter.spec.hop_length / sr
        if seconds <= 0:
            raise ValueError("pass --seconds")
    if args.cont and seconds * sr <= clip.shape[-1]:
        raise ValueError(
            f"--continue: {args.cont} is already {clip.shape[-1] / sr:.2f} s long; ask for a longer total with "
            f"--seconds (more than {clip.shape[-1] / sr:.2f})"
        )

    check_extent(pipe, args, Extent(seconds=seconds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    print(f"{folder}: {args.num} clip(s) of {seconds:.2f} s at {sr} Hz, seed {seed}", flush=True)
    for start in range(0, args.num, args.batch):
        n = min(args.batch, args.num - start)
        common = {
            "steps": args.steps, "sampler": args.sampler, "guidance": args.guidance, "label": args.label,
            "prompt": args.prompt, "seed": seed + start, "progress": not args.quiet,
        }  # fmt: skip
        if args.cont:
            waves = pipe.continue_audio(clip, seconds, num=n, **common)
        elif args.init:
            waves = pipe.audio_to_audio(
                clip[..., : pipe.num_samples(seconds)], args.strength, num=n, **common
            )
        else:
            waves = pipe.generate(n, seconds, **common)
        for k in range(n):
            also = (".png",) if args.spectrogram else ()  # the wav and its PNG share a free name
            path = free_path(out / f"sample-{start + k:03d}-seed{seed + start + k}.wav", args.overwrite, also)
            paths.append(write_audio(path, waves[k].cpu(), sr))
            if args.spectrogram:  # sample-000-seed0.png beside sample-000-seed0.wav
                spectrogram_png(waves[k].cpu(), sr, path.with_suffix(".png"), title=path.name)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "generate audio"))
