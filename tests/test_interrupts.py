"""Nothing lost on an interrupt, no two trainings in one run folder (issue 11, items 1 and 2).

A real ``multidiff train`` subprocess gets SIGINT or SIGTERM mid-run: it finishes the step, writes a
checkpoint, says where, and exits 130 / 143 without a traceback; the same command then ends bit-identical
to an uninterrupted run. A run folder whose lock belongs to a live process is refused before any work; a
lock left by a dead process is taken over with a warning."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multidiff import train
from multidiff.cli import main as cli
from multidiff.io import write_audio

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    t = torch.arange(8000, dtype=torch.float64) / 16000
    for cls, f in (("low", 220.0), ("high", 1100.0)):
        (root / cls).mkdir()
        for k in range(2):
            write_audio(
                root / cls / f"{k}.wav", (0.3 * torch.sin(2 * math.pi * f * (1 + k / 9) * t)).float(), 16000
            )
    return root


def args(data: Path, run: Path, steps: int) -> list[str]:
    return [
        "train", "audio", "--data", str(data), "--out", str(run), "--preset", "tiny", "--steps", str(steps),
        "--batch", "2", "--seconds", "0.25", "--labels", "--ckpt-every", "1000", "--log-every", "1",
        "--preview-every", "0", "--device", "cpu", "--threads", "1",
    ]  # fmt: skip


def logged_steps(run: Path) -> int:
    return sum(1 for r in train.read_log(run) if isinstance(r.get("step"), int)) if run.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_and_the_rerun_is_bit_identical(data: Path, tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "multidiff", *args(data, run, 400)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while logged_steps(run) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "Traceback" not in out
    assert f"{signal.Signals(sig).name} at step" in err and "rerun the same command" in err
    assert (out + err).count(f"{signal.Signals(sig).name} at step") == 1  # said once, by the command
    ckpt = train.latest_checkpoint(run)
    assert ckpt is not None and 3 <= ckpt.step < 400  # nothing after the last finished step is lost
    assert not (run / train.LOCK_NAME).exists()

    # the same command with a smaller total finishes; an uninterrupted run to the same step is identical
    total = ckpt.step + 2
    assert cli(args(data, run, total)) == 0
    assert cli(args(data, tmp_path / "straight", total)) == 0
    a = load_file(str(train.latest_checkpoint(run).path / "model.safetensors"))
    b = load_file(str(train.latest_checkpoint(tmp_path / "straight").path / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_folder_in_use_is_refused_before_any_work(data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": "earlier"}
    (run / train.LOCK_NAME).write_text(json.dumps(owner))  # a live process: this one
    assert cli(args(data, run, 2)) == 2
    err = capsys.readouterr().err
    assert err.startswith("multidiff: error:") and "is in use" in err and str(os.getpid()) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert train.latest_checkpoint(run) is None  # nothing was written


def test_a_stale_lock_is_taken_over_with_a_warning(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / train.LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"})
    )
    with pytest.warns(UserWarning, match="no longer runs"):
        assert cli(args(data, run, 2)) == 0
    assert train.latest_checkpoint(run).step == 2 and not (run / train.LOCK_NAME).exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_at_a_random_moment_then_rerun_is_bit_identical(data: Path, tmp_path: Path, seed: int) -> None:
    """SIGKILL cannot be caught: the process dies mid-step (or mid-checkpoint). The folder still loads, its
    lock is a dead process's and is taken over, and the rerun ends bit-identical to an uninterrupted run."""
    import random

    run = tmp_path / "run"
    steps = 40
    argv = [*args(data, run, steps)]
    argv[argv.index("--ckpt-every") + 1] = "2"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "multidiff", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while logged_steps(run) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 0.4))
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed; give it more steps"
    ckpt = train.latest_checkpoint(run)  # whatever moment it died at, what is there loads
    assert ckpt is None or ckpt.step < steps
    with pytest.warns(UserWarning, match="no longer runs"):
        assert cli(argv) == 0
    straight = [*argv]
    straight[straight.index("--out") + 1] = str(tmp_path / "straight")
    assert cli(straight) == 0
    a = load_file(str(train.latest_checkpoint(run).path / "model.safetensors"))
    b = load_file(str(train.latest_checkpoint(tmp_path / "straight").path / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_signal_aborts_at_once_without_a_traceback(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "multidiff", *args(data, run, 400)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while logged_steps(run) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "aborted" in err or "SIGINT at step" in err  # the second came before or after the step ended


def test_two_concurrent_trainings_the_second_is_refused(data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "multidiff", *args(data, run, 400)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while logged_steps(run) < 1 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cli(args(data, run, 400)) == 2
    err = capsys.readouterr().err
    assert "is in use" in err and str(first.pid) in err
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode == 130 and not (run / train.LOCK_NAME).exists()
