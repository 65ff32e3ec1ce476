"""The run folder's lock and the signals that stop training cleanly (one process trains in a folder; Ctrl-C
finishes the step and writes a checkpoint)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "RUN_MARKER",
    "RunLockedError",
    "TrainingInterrupted",
    "check_run_folder",
    "mark_run",
    "interrupted",
    "run_lock",
    "stop_signals",
]


LOCK_NAME = "lock"
#: The file that marks a folder as a run of one train recipe (``{"recipe": "train audio"}``).
RUN_MARKER = "run.json"
# What a new run's folder may already hold besides the names of checkpoint.py and monitor.py (a run killed
# before its first checkpoint): an unmarked folder with anything else, and no checkpoint, is refused.
_RUN_NAMES = {"skipped.txt", "previews", "pipeline", "lora", "frame-cache", "latent-cache", "tensorboard", "wandb"}


def check_run_folder(out: str | os.PathLike[str], recipe: str, also: tuple[str, ...] = ()) -> Path:
    """The run folder ``out`` for ``recipe`` (e.g. ``"train audio"``), checked before any work; nothing is
    written (:func:`mark_run` marks it when training writes its first file).

    New, empty, a run of ``recipe``, or an unmarked folder holding a checkpoint (a run from before
    ``run.json``, whose checkpoint's settings the recipe then checks) is taken. Refused (ValueError naming ``--out``): a file, a run of
    another recipe, and a folder holding anything a run does not write (``also``: the names a recipe adds,
    e.g. the model files it publishes), which training would mix its files into or delete.
    """
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} is a file; give a folder for the run (new, or a run to resume)")
    marker = run / RUN_MARKER
    if marker.is_file():
        try:
            owner = str(json.loads(marker.read_text(encoding="utf-8"))["recipe"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{marker} is unreadable ({err}); is --out {run} a multidiff run?") from None
        if owner != recipe:
            raise ValueError(
                f"--out {run} is a run of `multidiff {owner}`, not of `multidiff {recipe}`: give another --out"
            )
        return run
    if run.is_dir():
        from multidiff.train.checkpoint import CKPT_PREFIX, LATEST_NAME
        from multidiff.train.monitor import _WANDB_ID, LOG_NAME, LOSS_PNG

        names = {p.name for p in run.iterdir() if not p.name.startswith(".")}  # dotfiles: temp files, .DS_Store
        if LATEST_NAME in names or any(n.startswith(CKPT_PREFIX) for n in names):
            return run  # a run from before run.json: its checkpoint's settings decide (check_resume)
        known = {*_RUN_NAMES, RUN_MARKER, LOCK_NAME, LATEST_NAME, LOG_NAME, LOSS_PNG, _WANDB_ID, *also}
        foreign = sorted(names - known)
        if foreign:
            listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ValueError(
                f"--out {run} already holds files that are not a multidiff run's ({listed}); give a new or "
                "empty folder (training would write its checkpoints and logs among them)"
            )
    return run


def mark_run(run: Path, recipe: str) -> None:
    """Create ``run`` and mark it as a run of ``recipe`` (``run.json``), once; the main process calls it
    when training writes its first file, so that a refused command leaves no folder behind."""
    marker = Path(run) / RUN_MARKER
    if marker.is_file():
        return
    from multidiff.atomic import write_text

    Path(run).mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps({"recipe": recipe}) + "\n", durable=True)


class RunLockedError(ValueError):
    """Another live process trains in this run folder."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint; ``signum`` says which signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_lock(run: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``run/lock`` (JSON: pid, host, start time) while a process trains in ``run``.

    The lock file is created exclusively, so of two processes started on one run folder only one trains;
    the other gets :class:`RunLockedError` naming the owner. A lock left by a process that no longer runs
    on this host is taken over with a warning; one from another host is never guessed dead (its path is
    named, to be removed by hand once that run is known to be gone).
    """
    if not enabled:
        yield
        return
    run.mkdir(parents=True, exist_ok=True)
    path = run / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text(encoding="utf-8"))
                pid, host = int(owner["pid"]), str(owner["host"])
            except (OSError, ValueError, KeyError, TypeError):
                owner, pid, host = {}, -1, "?"
            if host == me["host"] and pid > 0 and not _alive(pid):
                warnings.warn(
                    f"{path}: taking over the lock of process {pid}, which no longer runs", stacklevel=3
                )
                path.unlink(missing_ok=True)
                continue
            raise RunLockedError(
                f"{run} is in use: process {pid} on {host} has trained in it since {owner.get('started', '?')} "
                f"({path}); wait for it, or use another --out (remove {path} only if that process is gone)"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me) + "\n")
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == me["pid"]:
                path.unlink()


def interrupted(stop: Mapping[str, int | None], step: int, run: Path) -> TrainingInterrupted:
    """The exception a loop raises after it saved step ``step`` on the signal ``stop`` recorded."""
    signum = int(stop["signum"] or signal.SIGINT)
    name = signal.Signals(signum).name
    return TrainingInterrupted(
        f"{name} at step {step}: checkpoint written to {run}; rerun the same command to continue", signum
    )


@contextlib.contextmanager
def stop_signals() -> Iterator[dict[str, int | None]]:
    """While inside, the first SIGINT or SIGTERM only records itself (``state["signum"]``) so the loop can
    finish its step and checkpoint; a second one aborts at once (KeyboardInterrupt). Handlers are only
    installed from the main thread and restored on exit."""
    state: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        if state["signum"] is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborting without a checkpoint")
        state["signum"] = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing this step and writing a checkpoint "
            "(send it again to abort at once)",
            flush=True,
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)
