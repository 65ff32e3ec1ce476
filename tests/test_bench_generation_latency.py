"""benchmarks/generation_latency.py: the CPU smoke run (every case times both sides and writes its table), and
the DiT case's two sides computing the same samples from the same start (so the benchmark times equal work)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import generation_latency as gl  # noqa: E402

from multidiff.core.samplers import noise_like  # noqa: E402
from multidiff.pipeline import Pipeline  # noqa: E402

pytest.importorskip("diffusers")


def test_tiny_run_times_both_sides_of_every_case(tmp_path: Path) -> None:
    gl.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "generation_latency.json").read_text())
    assert result["env"]["command"].endswith(f"--tiny --device cpu --out {tmp_path}")
    assert [c["name"] for c in result["cases"]] == list(gl.CASES)
    table = (tmp_path / "generation_latency.md").read_text()
    for case in result["cases"]:
        rows = case["rows"]
        assert {r["mode"] for r in rows} == {"eager"}
        assert "diffusers" in {r["side"] for r in rows} and "multidiff" in {r["side"] for r in rows}
        for r in rows:
            assert "error" not in r, r
            assert math.isfinite(r["seconds"]) and r["seconds"] > 0, r
            assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
            assert r["gflop_per_call"] > 0 and r["params_m"] > 0, r
        assert f"### {case['name']}" in table
    assert table.count("| multidiff | eager |") == len(gl.CASES)
    assert "Griffin" in table or "vocoder" in table  # the audio note says the vocoder is timed


def test_dit_case_sides_sample_the_same_from_the_same_start() -> None:
    """multidiff's DDIM through its Pipeline and the DiTPipeline loop through diffusers' DDIMScheduler, float32:
    the same samples to ~1e-4 when started from the same state (x = σ0·n, i.e. VP latents σ0·n/√(1+σ0²))."""
    spec = gl.dit_case(gl.Options("cpu", tiny=True), batch=2)
    p = spec["parity"]
    pipe, grid, shape, labels = p["pipe"], p["grid"], p["shape"], p["labels"]
    ours = pipe.sample(2, shape, sigmas=grid, label=labels, seed=0, progress=False)
    gens = [torch.Generator().manual_seed(s) for s in Pipeline.seeds(2, 0)]  # as Pipeline.sample draws
    s0 = float(grid[0])
    latents = noise_like(torch.empty(2, *shape), gens) * (s0 / math.sqrt(1 + s0**2))
    steps, guidance = len(grid) - 1, pipe.sampling.guidance
    theirs = gl.diffusers_dit_loop(p["ref"], p["scheduler"], latents, torch.tensor(labels), guidance, steps)
    rel = float((ours - theirs).norm() / theirs.norm())
    assert rel < 1e-4, rel
    # the comparison is not vacuous: the network and the guidance move the samples far more than 1e-4
    unguided = pipe.sample(2, shape, sigmas=grid, label=labels, seed=0, guidance=1.0, progress=False)
    assert float((unguided - ours).norm() / ours.norm()) > 1e-2
