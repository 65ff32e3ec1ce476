"""benchmarks/fp8_map.py: the CPU smoke run (bf16 rows, fp8 rows skipped with the reason), the clean skip
without float8, and the parts the device run relies on (token grid, float8 filter, seeded loss runs)."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fp8_map  # noqa: E402

TINY_POINTS = {(32, "16"), (32, "2x16"), (64, "16"), (64, "2x16")}


def test_tiny_run_times_bf16_at_every_point_and_skips_fp8_with_the_reason(tmp_path: Path) -> None:
    fp8_map.main(["--tiny", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "fp8_map.json").read_text())
    assert result["env"]["command"].endswith(f"--tiny --out {tmp_path}")
    rows = result["rows"]
    bf16 = {(r["width"], r["grid"]): r for r in rows if r["variant"] == "bf16"}
    assert set(bf16) == TINY_POINTS
    for r in bf16.values():
        assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0, r
    fp8 = [r for r in rows if r["variant"] != "bf16"]
    assert {(r["width"], r["grid"], r["variant"]) for r in fp8} == {
        (w, g, v) for w, g in TINY_POINTS for v in ("fp8-tensorwise", "fp8-rowwise")
    }
    for r in fp8:
        assert "ratio" not in r and ("CUDA" in r["skipped"] or "torchao" in r["skipped"]), r
    table = (tmp_path / "fp8_map.md").read_text()
    assert "| width | tokens | batch | bf16 samples/s | fp8-tensorwise ratio | fp8-rowwise ratio |" in table
    assert table.count("| fp8 skipped |") == len(TINY_POINTS)


def test_without_float8_the_map_is_skipped_with_one_line(tmp_path: Path, capsys) -> None:
    result = fp8_map.main(["--device", "cpu", "--out", str(tmp_path)])
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("fp8_map: skipped: "))
    assert "CUDA" in line and result["rows"] == [] and result["skipped"] in line
    assert line in (tmp_path / "fp8_map.md").read_text()
    assert json.loads((tmp_path / "fp8_map.json").read_text())["skipped"] == result["skipped"]


def test_token_grid() -> None:
    assert fp8_map.latent_shape("256") == (4, 32, 32) and fp8_map.n_tokens((4, 32, 32)) == 256
    assert fp8_map.latent_shape("1024") == (4, 64, 64)
    assert fp8_map.latent_shape("16x256") == (4, 16, 32, 32) and fp8_map.n_tokens((4, 16, 32, 32)) == 4096
    for bad in ("300", "0", "0x16", "16x", "abc", "4x4x4"):
        with pytest.raises(ValueError, match="--tokens"):
            fp8_map.latent_shape(bad)
    with pytest.raises(ValueError, match="width=1000"):  # 15 heads of 64 do not divide it: refused up front
        fp8_map.main(["--widths", "1000", "--device", "cpu"])


def test_loss_runs_from_the_same_weights_repeat_exactly() -> None:
    shape = fp8_map.latent_shape("16")
    base = fp8_map.DiT(fp8_map.dit_config(32, 2, shape))
    runs = [
        fp8_map.train_losses(copy.deepcopy(base), shape, 2, "cpu", steps=3, compile=False) for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0]) == 3 and all(math.isfinite(v) and v > 0 for v in runs[0])


def test_verdicts() -> None:
    bf16 = dict(variant="bf16", samples_per_s=10.0, peak_gib=10.0)

    def fp8(ratio: float, peak: float) -> dict:
        return dict(variant="fp8-rowwise", ratio=ratio, peak_gib=peak)

    assert fp8_map.verdict([bf16, fp8(0.9, 12.0), fp8(1.3, 12.0)]) == "fp8 pays (>=1.2x)"
    assert fp8_map.verdict([bf16, fp8(1.1, 8.0)]) == "memory saver only"
    assert fp8_map.verdict([bf16, fp8(0.8, 10.0)]) == "slower"
    assert fp8_map.verdict([bf16, dict(variant="fp8-rowwise", skipped="no CUDA")]) == "fp8 skipped"
