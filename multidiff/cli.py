"""The ``multidiff`` command: ``train``, ``generate`` and ``demo``, forwarding to the recipes.

    multidiff train audio --data DIR --out RUN [--preset tiny] [--steps N] ...
    multidiff generate audio --ckpt RUN --num 4 --seconds 2 --out DIR ...
    multidiff demo audio|video|image --out DIR   # synthetic data -> tiny model -> samples, on a CPU
    multidiff models                             # the bundled models (use one with --model NAME)
    multidiff ui --ckpt RUN                      # a local web page to generate from a model (gradio)
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
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

__all__ = ["main", "load_recipe", "run_recipe", "OneLineParser", "synth_tone_folder", "COMMANDS"]

#: Modalities of ``multidiff demo`` (:mod:`multidiff.demo`).
DEMO_MODALITIES = ("audio", "image", "video")

# command -> modality -> recipe file
COMMANDS: dict[str, dict[str, str]] = {
    "train": {"audio": "train_audio.py", "video": "train_video.py", "image": "train_image.py"},
    "generate": {"audio": "generate_audio.py", "video": "generate_video.py", "image": "generate_image.py"},
}


def synth_tone_folder(
    root: str | os.PathLike[str],
    per_class: int = 8,
    sample_rate: int = 16000,
    seconds: float = 1.5,
    seed: int = 0,
) -> Path:
    """:func:`multidiff.demo.synth_tone_folder` (kept here, where it was first defined)."""
    from multidiff.demo import synth_tone_folder as make

    return make(root, per_class, sample_rate, seconds, seed)


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


def _demo(modality: str, argv: Sequence[str]) -> int:
    """``multidiff demo MODALITY ARGS`` (:mod:`multidiff.demo`), with the command's error handling."""
    from multidiff.demo import run_demo

    return run_recipe(lambda a: run_demo(modality, a), argv, f"demo {modality}")


def _models(argv: Sequence[str]) -> int:
    """``multidiff models``: the bundled pipelines, one line each (name, modality, settings)."""
    from multidiff.models import MODELS_DIR, available, describe

    p = OneLineParser(prog="multidiff models", description="List the models bundled with this install.")
    p.parse_args(list(argv))
    names = available()
    if not names:
        print(f"no bundled models in {MODELS_DIR} (train one: multidiff demo audio --out DIR)")
        return 0
    for name in names:
        try:
            print(f"{name}: {describe(MODELS_DIR / name, name).summary}")
        except ValueError as err:
            print(f"{name}: unreadable ({err})")
    return 0


def _ui(argv: Sequence[str]) -> int:
    """``multidiff ui --ckpt RUN`` (:mod:`multidiff.ui`)."""
    from multidiff.ui import main as ui_main

    return run_recipe(ui_main, argv, "ui")


def _build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="multidiff",
        description="Diffusion models for audio, video and image latents.",
        epilog="Run 'multidiff COMMAND MODALITY --help' for the options of a recipe.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for command, help_text in (
        ("train", "train a model on a folder (resumes when rerun)"),
        ("generate", "generate media with a trained model"),
        ("demo", "synthetic data -> tiny model -> samples, in minutes on a CPU"),
    ):
        c = sub.add_parser(command, help=help_text, description=help_text, add_help=True)
        modalities = COMMANDS.get(command, dict.fromkeys(DEMO_MODALITIES, ""))
        c.add_argument(
            "modality", choices=sorted(modalities), help="what to work on: " + ", ".join(sorted(modalities))
        )
        c.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the recipe")
    for command, help_text in (
        ("models", "list the models bundled with this install"),
        (
            "ui",
            "a local web page to generate from a model: multidiff ui --ckpt RUN (pip install multidiff[ui])",
        ),
    ):
        c = sub.add_parser(command, help=help_text, description=help_text, add_help=False)
        c.add_argument("args", nargs=argparse.REMAINDER, help="options (see --help)")
    return p


def run_recipe(main_fn: Callable[[list[str]], Any], argv: Sequence[str], what: str) -> int:
    """Run a recipe's ``main(argv)`` as the command does: bad input (a folder, a setting, a busy run folder)
    is one line ``multidiff: error: ...`` and exit 2; a failure of the machine (a full disk, a permission) one
    line naming the path and exit 1, as is ``torch.compile`` failing (its cause, and how to turn it off); an
    interrupted training exits 128 + the signal after its checkpoint; ``--debug`` shows the traceback
    instead. The recipes' own ``__main__`` blocks call this too."""
    from multidiff.train import TrainingInterrupted
    from multidiff.train.step import NonFiniteLossError

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
    except (ModuleNotFoundError, NonFiniteLossError) as err:  # a missing optional package; a diverged run
        if debug or (isinstance(err, ModuleNotFoundError) and (err.name or "").startswith("multidiff")):
            raise
        print(f"multidiff: error: {what}: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk, a permission: say so and name the path
        if debug:
            raise
        print(f"multidiff: error: {what}: {err.strerror or err} ({err.filename})", file=sys.stderr)
        return 1
    except Exception as err:  # torch.compile failing on this machine: say so, not a traceback
        from multidiff.nn.graphs import compiler_error

        if debug or not compiler_error(err):
            raise
        cause = getattr(err, "inner_exception", None) or err  # Inductor's own error wraps the cause
        first = (str(cause).strip().splitlines() or [""])[0][:300]
        off = "--no-compile" if what.startswith("train") else "no --compile"
        print(f"multidiff: error: {what}: torch.compile failed ({type(cause).__name__}: {first}); run with "
              f"{off}, or add --debug for the traceback", file=sys.stderr)  # fmt: skip
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
    if argv[0] == "models":
        return _models(argv[1:])
    if argv[0] == "ui":
        return _ui(argv[1:])
    # 'multidiff train audio --help' must reach the recipe, so split by hand after the two words.
    if argv[0] in ("train", "generate", "demo") and len(argv) >= 2 and not argv[1].startswith("-"):
        command, modality, rest = argv[0], argv[1], argv[2:]
        if command == "demo":
            if modality not in DEMO_MODALITIES:
                parser.error(f"no demo for {modality!r}; available: {', '.join(DEMO_MODALITIES)}")
            return _demo(modality, rest)
        recipes = COMMANDS[command]
        if modality not in recipes:
            parser.error(f"cannot {command} {modality!r}; available: {', '.join(sorted(recipes))}")
        return run_recipe(load_recipe(recipes[modality]).main, rest, f"{command} {modality}")
    parser.parse_args(argv)  # prints help or a usage error
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
