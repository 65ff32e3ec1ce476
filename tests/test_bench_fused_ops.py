"""benchmarks/fused_ops.py: the tiny run through Triton's interpreter times every op both ways and finds
the fused and plain results equal to bf16 rounding; the table holds every row."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the fused kernels are Triton kernels; Triton ships with Linux torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fused_ops.py"


def test_tiny_run_times_every_op_both_ways(tmp_path: Path) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--runs", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "fused_ops.json").read_text())["rows"]
    names = [r["name"] for r in rows]
    assert names[:4] == [
        "adaLN LayerNorm + modulation",
        "adaLN-Zero gate + residual",
        "rotary embedding",
        "QK-norm + rotary embedding",
    ]
    assert sum("GroupNorm" in n for n in names) == 2  # NCHW and channels-last at the tiny level
    for r in rows:
        for key in ("plain_fwd_us", "fused_fwd_us", "plain_fwd_bwd_us", "fused_fwd_bwd_us", "gain_fwd_bwd"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["name"], key)
        # the GPU's share of each call is taken from the profiler's CUDA events: none on the CPU
        gpu_keys = [k for k in r if "gpu" in k]
        assert len(gpu_keys) == 7 and all(r[k] is None for k in gpu_keys), r
        assert r["max_abs_diff"] < 0.1, r  # bf16 outputs of order 1: a few units in the last place
    table = (tmp_path / "fused_ops.md").read_text()
    assert all(n in table for n in names)
    assert table.count(" / n/a") == 7 * len(names)  # every time as wall / GPU
    # the LayerNorm kernels' autotuners: the interpreter runs their first settings without them, untimed
    tuned = json.loads((tmp_path / "fused_ops.json").read_text())["tuned"]
    assert tuned == {
        n: {"picked": {}, "timings_ms": {}} for n in ("ln_modulate_fwd_tuned", "ln_modulate_bwd_tuned")
    }
    assert "Autotuned launch settings picked: none" in table
