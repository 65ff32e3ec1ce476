"""What the command says (issue 11, item 10): skipped files as one-line warnings without Python source lines,
every skipped path and reason in RUN/skipped.txt, and a data summary before training (files used and
skipped, the conversions applied)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from multidiff.io import write_audio


def test_training_summarises_its_data_and_lists_every_skipped_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    t = torch.arange(6000, dtype=torch.float64) / 22050
    for k in range(2):
        write_audio(data / f"{k}.wav", (0.3 * torch.sin(2 * math.pi * 300 * (k + 1) * t)).float(), 22050)
    for k in range(25):  # more broken files than warnings are shown for
        (data / f"broken{k:02d}.wav").write_text("not audio")
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "multidiff", "train", "audio", "--data", str(data), "--out", str(run),
         "--preset", "tiny", "--steps", "1", "--batch", "2", "--seconds", "0.25", "--device", "cpu"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln.lower()]
    assert warnings and all(ln.startswith("multidiff: warning: ") for ln in warnings)
    assert "warnings.warn" not in proc.stderr and "SkippedFileWarning" not in proc.stderr
    listed = (run / "skipped.txt").read_text().splitlines()
    assert len(listed) == 25 and all("\t" in ln for ln in listed)
    summary = next(ln for ln in proc.stdout.splitlines() if ln.startswith("data:"))
    assert "2 audio file(s) used, 25 skipped" in summary and "skipped.txt" in summary
    assert "2 resampled 22050 Hz -> 16000 Hz" in summary and "0.25 s clips at 16000 Hz" in summary
