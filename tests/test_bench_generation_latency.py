"""benchmarks/generation_latency.py: the CPU smoke run (every case times both sides and writes its table, the
graphed modes noted as needing CUDA), the modes' mapping to the sides, the graphed rows' check, and the DiT
case's two sides computing the same samples from the same start (so the benchmark times equal work)."""

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
    assert result["env"]["modes"] == ["eager", "graphs"] and result["env"]["cudnn_benchmark"] is False
    assert [c["name"] for c in result["cases"]] == list(gl.CASES)
    table = (tmp_path / "generation_latency.md").read_text()
    for case in result["cases"]:
        rows = case["rows"]
        assert "diffusers" in {r["side"] for r in rows} and "multidiff" in {r["side"] for r in rows}
        for r in rows:
            assert r["ours"] == r["side"].startswith("multidiff"), r
            if r["mode"] == "graphs":  # multidiff only, and off CUDA a note rather than a failure
                assert r["ours"] and r["skipped"] == "needs CUDA" and "error" not in r, r
                continue
            assert r["mode"] == "eager" and "error" not in r, r
            assert math.isfinite(r["seconds"]) and r["seconds"] > 0, r
            assert math.isfinite(r["vs_diffusers_eager"]) and r["vs_diffusers_eager"] > 0, r
            assert r["vs_diffusers_compiled"] is None, r  # no compiled diffusers row ran
            assert r["gflop_per_call"] > 0 and r["params_m"] > 0, r
        ours = {r["side"] for r in rows if r["ours"]}
        assert {(s, m) for s in ours for m in ("eager", "graphs")} <= {(r["side"], r["mode"]) for r in rows}
        assert f"### {case['name']}" in table
    assert table.count("\n| multidiff | eager |") == len(gl.CASES)  # a row per case table
    assert table.count("\n| multidiff | graphs | needs CUDA |") == len(gl.CASES)
    assert "Griffin" in table or "vocoder" in table  # the audio note says the vocoder is timed
    summary = {(s["case"], s["side"]): s for s in result["summary"]}
    assert {c for c, _ in summary} == set(gl.CASES)
    for s in summary.values():  # the best multidiff mode is the eager one; no compiled diffusers to face
        assert s["mode"] == "eager" and s["seconds"] > 0 and s["diffusers_seconds"] is None, s
    assert "### Summary" in table


def test_modes_map_to_the_sides_that_have_them(tmp_path: Path) -> None:
    """``--modes graphs compile+graphs`` are multidiff's alone (skipped off CUDA before compiling anything);
    ``--no-compile`` drops every compiled mode; a run writes its rows as it goes."""
    gl.main(["--tiny", "--device", "cpu", "--only", "DiT-XL/2-b1", "--modes", "compile+graphs", "graphs",
             "--out", str(tmp_path)])  # fmt: skip
    result = json.loads((tmp_path / "generation_latency.json").read_text())
    rows = result["cases"][0]["rows"]
    assert [(r["side"], r["mode"], r.get("skipped")) for r in rows] == [
        ("multidiff", "compile+graphs", "needs CUDA"),
        ("multidiff", "graphs", "needs CUDA"),
    ]
    assert result["summary"][0]["mode"] is None and result["summary"][0]["ratio"] is None
    with pytest.raises(SystemExit):
        gl.main(["--tiny", "--device", "cpu", "--no-compile", "--modes", "compile", "reduce-overhead"])
    with pytest.raises(SystemExit):
        gl.main(["--tiny", "--device", "cpu", "--modes", "turbo"])
    assert set(gl.ALL_MODES) == set(gl.MULTIDIFF_MODES) | set(gl.DIFFUSERS_MODES)
    assert set(gl.MULTIDIFF_MODES) & set(gl.DIFFUSERS_MODES) == {"eager", "compile"}
    # minutes of autotuning only when asked for: not among the defaults, and dropped by --no-compile
    assert {"autotune+graphs", "max-autotune"}.isdisjoint(gl.MODES)
    gl.main(["--tiny", "--device", "cpu", "--only", "DiT-XL/2-b1", "--no-compile",
             "--modes", "eager", "autotune+graphs", "max-autotune", "--out", str(tmp_path / "nc")])  # fmt: skip
    rows = json.loads((tmp_path / "nc" / "generation_latency.json").read_text())["cases"][0]["rows"]
    assert {r["mode"] for r in rows} == {"eager"}
    # cuDNN's algorithm search: recorded, on for the run only
    gl.main(["--tiny", "--device", "cpu", "--only", "DiT-XL/2-b1", "--no-compile", "--modes", "eager",
             "--cudnn-benchmark", "--out", str(tmp_path / "cb")])  # fmt: skip
    assert json.loads((tmp_path / "cb" / "generation_latency.json").read_text())["env"]["cudnn_benchmark"]
    assert torch.backends.cudnn.benchmark is False


def test_graph_check_once_per_case_and_graphed_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graphed rows' check, on the CPU: CUDA and the capture faked (the pipeline samples eagerly, as
    graphs=False), so graphed and ungraphed latents agree exactly; computed once for the case's two
    multidiff sides, and saved after every row."""
    import multidiff.pipeline
    import multidiff.pipeline_audio

    monkeypatch.setattr(gl.Options, "cuda", property(lambda self: True))  # the graphed modes run
    monkeypatch.setattr(gl.Options, "ref", lambda self, model: model.eval())  # but float32 weights
    for module in (multidiff.pipeline, multidiff.pipeline_audio):  # the denoiser's and the vocoder's graphs
        monkeypatch.setattr(module, "use_graphs", lambda graphs, device: False)
    monkeypatch.setattr(gl, "_first_call", lambda side, run, mode: run())
    saved = []
    case = gl.run_case("spoken-digits", gl.Options("cpu", tiny=True), ["graphs", "eager"], 1, 1,
                       lambda c: saved.append(len(c["rows"])))  # fmt: skip
    assert saved == list(range(1, 7))  # 2 sides graphed, 4 eager (diffusers with and without a vocoder)
    graphed = [r for r in case["rows"] if r["mode"] == "graphs"]
    assert [r["side"] for r in graphed] == ["multidiff", "multidiff (no vocoder)"]
    for r in graphed:
        assert "error" not in r, r
        assert r["graphs_vs"] == "eager" and r["graphs_max_abs_diff"] == 0.0 and not r["graphs_flagged"], r
    assert all("graphs_vs" not in r for r in case["rows"] if r["mode"] == "eager")
    assert "0.0e+00 vs eager" in gl.table(case["rows"])


def test_graph_check_flags_a_difference_over_a_hundredth_of_the_std() -> None:
    ref = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    std = float(ref.std())
    close = gl.graph_check(ref + 0.5e-2 * std, ref, "eager")
    assert not close["graphs_flagged"] and close["graphs_diff_over_std"] == pytest.approx(0.5e-2, rel=1e-3)
    far = gl.graph_check(ref + 2e-2 * std, ref, "compile")
    assert far["graphs_flagged"] and far["graphs_vs"] == "compile"
    assert gl.graph_check(ref * float("nan"), ref, "eager")["graphs_flagged"]
    assert "**over 0.01 std**" in gl.table([{**_row(), **far}])


def _row() -> dict:
    return dict(side="multidiff", mode="graphs", ours=True, seconds=1.0, seconds_per_clip=1.0,
                peak_gib=None, host_syncs=None, first_call_s=1.0, params_m=1.0, gflop_per_call=1.0,
                precision="fp32")  # fmt: skip


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


def test_each_multidiff_side_is_compared_with_the_diffusers_side_doing_the_same_work() -> None:
    """The audio case's two pairs: with the vocoder against diffusers with torchaudio's Griffin-Lim, without it
    against diffusers ending at mels; ratios and the summary each take their own pair's times."""

    def row(side: str, mode: str, seconds: float, ours: bool, against: str) -> dict:
        return dict(case="c", side=side, mode=mode, seconds=seconds, ours=ours, against=against, batch=1,
                    peak_gib=0.1)  # fmt: skip

    vocoder = "diffusers + Griffin-Lim"
    rows = [
        row("multidiff", "compile+graphs", 0.02, True, vocoder),
        row("multidiff (no vocoder)", "compile+graphs", 0.01, True, "diffusers"),
        row("diffusers", "eager", 0.08, False, "diffusers"),
        row("diffusers", "reduce-overhead", 0.04, False, "diffusers"),
        row(vocoder, "eager", 0.12, False, vocoder),
        row(vocoder, "reduce-overhead", 0.09, False, vocoder),
    ]
    gl.add_ratios(rows)
    assert rows[0]["vs_diffusers_eager"] == pytest.approx(6.0) and rows[0]["vs_diffusers_compiled"] == 4.5
    assert rows[1]["vs_diffusers_eager"] == pytest.approx(8.0) and rows[1]["vs_diffusers_compiled"] == 4.0
    assert rows[5]["vs_diffusers_compiled"] == 1.0 and rows[3]["vs_diffusers_eager"] == 2.0
    summary = {s["side"]: s for s in gl.summarise([dict(name="c", rows=rows)])}
    assert summary["multidiff"]["diffusers_side"] == vocoder and summary["multidiff"]["ratio"] == 4.5
    assert summary["multidiff (no vocoder)"]["diffusers_seconds"] == 0.04
    assert (
        "| c | multidiff | compile+graphs | 0.0200 | 0.10 | diffusers + Griffin-Lim | reduce-overhead | "
        in (gl.summary_table(list(summary.values())))
    )
