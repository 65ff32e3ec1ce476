"""The ``multidiff`` command: ``train``, ``generate`` and ``demo``, forwarding to the recipes.

    multidiff train audio --data DIR --out RUN [--preset tiny] [--steps N] ...
    multidiff generate audio --ckpt RUN --num 4 --seconds 2 --out DIR ...
    multidiff demo audio --out DIR            # synthetic tones -> tiny model -> generated wavs
    multidiff train video --data DIR --out RUN [--preset tiny] [--frames F] [--size S] [--vae VAE] ...
    multidiff generate video --ckpt RUN --num 4 --frames 16 --out DIR [--first-frame IMG] [--prompt TEXT] ...
    multidiff train image --data DIR --out RUN ...; multidiff generate image --ckpt RUN --num 8 --out DIR

``multidiff train audio ARGS`` runs exactly ``python recipes/train_audio.py ARGS`` (the recipe's ``main``),
so the recipe stays the one readable source of the training procedure. The recipes are installed with the
package as ``multidiff.recipes`` (the top-level ``recipes/`` folder), so an installed wheel runs them.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

__all__ = ["main", "load_recipe", "run_recipe", "OneLineParser", "synth_tone_folder", "COMMANDS"]

# command -> modality -> recipe file
COMMANDS: dict[str, dict[str, str]] = {
    "train": {"audio": "train_audio.py", "video": "train_video.py", "image": "train_image.py"},
    "generate": {"audio": "generate_audio.py", "video": "generate_video.py", "image": "generate_image.py"},
}


def load_recipe(filename: str) -> ModuleType:
    """The recipe module for a file name of the ``recipes/`` folder (``"train_audio.py"``,
    ``"data/make_speech.py"``), imported as ``multidiff.recipes.*``; its ``main(argv)`` is then callable."""
    name = "multidiff.recipes." + filename.removesuffix(".py").replace("/", ".")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            raise
        raise FileNotFoundError(f"no recipe {filename!r} (module {name})") from None


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
    import numpy as np

    from multidiff.io import write_audio

    rng = np.random.default_rng(seed)
    root = Path(root)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
    for cls in ("low", "high", "chirp"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            if cls == "low":
                f = rng.uniform(150, 300)
                x = sum(np.sin(2 * math.pi * f * h * t) / h for h in (1, 2, 3))
            elif cls == "high":
                x = np.sin(2 * math.pi * rng.uniform(1000, 2000) * t)
            else:
                f0, f1 = rng.uniform(200, 500), rng.uniform(1500, 3000)
                x = np.sin(2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
            x = 0.5 * fade * x / np.abs(x).max() + 0.003 * rng.standard_normal(n)
            write_audio(root / cls / f"{cls}-{k:02d}.wav", x.astype(np.float32), sample_rate)
    return root


def _demo_audio(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(
        prog="multidiff demo audio",
        description="Synthetic tones -> a tiny class-conditional model trained on the CPU -> generated wavs.",
    )
    p.add_argument("--out", required=True, help="demo folder (data/, run/, samples/)")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--device", help="cpu or cuda")
    args = p.parse_args(list(argv))
    out = Path(args.out)
    data = out / "data"
    if not data.is_dir():
        synth_tone_folder(data)
    device = ["--device", args.device] if args.device else []
    load_recipe("train_audio.py").main(
        [
            "--data",
            str(data),
            "--out",
            str(out / "run"),
            "--preset",
            "tiny",
            "--labels",
            "--steps",
            str(args.steps),
            *device,
        ]
    )
    gen = load_recipe("generate_audio.py")
    for label in ("low", "high", "chirp"):
        gen.main(["--ckpt", str(out / "run"), "--num", "2", "--seconds", "1.5", "--label", label, "--guidance", "2",
                  "--seed", "0", "--out", str(out / "samples" / label), *device])  # fmt: skip


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multidiff",
        description="Diffusion models for audio, video and image latents.",
        epilog="Run 'multidiff COMMAND MODALITY --help' for the options of a recipe.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command, help_text in (
        ("train", "train a model on a folder (resumes when rerun)"),
        ("generate", "generate media with a trained model"),
        ("demo", "synthetic data -> tiny model -> samples, in minutes on a CPU"),
    ):
        c = sub.add_parser(command, help=help_text, description=help_text, add_help=True)
        modalities = COMMANDS.get(command, {"audio": ""})
        c.add_argument(
            "modality", choices=sorted(modalities), help="what to work on: " + ", ".join(sorted(modalities))
        )
        c.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the recipe")
    return p


def run_recipe(main_fn: Callable[[list[str]], Any], argv: Sequence[str], what: str) -> int:
    """Run a recipe's ``main(argv)`` as the command does: bad input (a folder, a setting, a busy run folder)
    is one line ``multidiff: error: ...`` and exit 2; a failure of the machine (a full disk, a permission) one
    line naming the path and exit 1; an interrupted training exits 128 + the signal after its checkpoint;
    ``--debug`` shows the traceback instead. The recipes' own ``__main__`` blocks call this too."""
    from multidiff.train import TrainingInterrupted

    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    saved = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    try:
        main_fn(argv)
    except TrainingInterrupted as err:  # a checkpoint is written; the message says where
        print(f"multidiff: {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt as err:  # a second Ctrl-C, or one outside training: stop now
        if debug:
            raise
        print(f"multidiff: aborted ({err or 'interrupted'}); the last checkpoint is intact", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:  # bad input: no traceback
        if debug:
            raise
        print(f"multidiff: error: {what}: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a permission: say so and name the path
        if debug:
            raise
        print(f"multidiff: error: {what}: {err.strerror or err} ({err.filename})", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = saved
    return 0


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line ``multidiff: error: PROG: ...`` (exit 2), as every other
    error of the command; ``--help`` is unchanged."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"multidiff: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _one_line_warning(
    message: Warning | str, category: type[Warning], *args: object, **kwargs: object
) -> str:
    """Warnings of the command as one line each, with no Python source line under them."""
    return f"multidiff: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multidiff`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    if not argv:
        parser.print_help()
        return 0
    # 'multidiff train audio --help' must reach the recipe, so split by hand after the two words.
    if argv[0] in ("train", "generate", "demo") and len(argv) >= 2 and not argv[1].startswith("-"):
        command, modality, rest = argv[0], argv[1], argv[2:]
        if command == "demo":
            if modality != "audio":
                parser.error(f"no demo for {modality!r}; available: audio")
            try:
                _demo_audio(rest)
            except (ValueError, FileNotFoundError) as err:
                print(f"multidiff: error: demo audio: {err}", file=sys.stderr)
                return 2
            return 0
        recipes = COMMANDS[command]
        if modality not in recipes:
            parser.error(f"cannot {command} {modality!r}; available: {', '.join(sorted(recipes))}")
        return run_recipe(load_recipe(recipes[modality]).main, rest, f"{command} {modality}")
    parser.parse_args(argv)  # prints help or a usage error
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
