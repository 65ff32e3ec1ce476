"""benchmarks/train_throughput.py on the CPU: a tiny eager run times our model, the variants asked for and
diffusers' model last, and ``--sides`` keeps only the sides named (the device calls use it to give a slow
compilation a stage of its own)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_throughput as tt  # noqa: E402

pytest.importorskip("diffusers")

BASE = [
    "--only",
    "Mel-UNet-75M",
    "--tiny",
    "--no-compile",
    "--steps",
    "1",
    "--warmup",
    "1",
    "--device",
    "cpu",
]


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["rows"]


def test_backend_settings_are_recorded_and_hold_for_the_run_only(tmp_path: Path) -> None:
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tt.main([*BASE, "--sides", "ours", "--cudnn-benchmark", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text())["env"]["cudnn_benchmark"] is True
    assert torch.backends.cudnn.benchmark is False  # the settings are the run's only, TF32 too
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    tt.main([*BASE, "--sides", "ours", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text())["env"]["cudnn_benchmark"] is False


def test_variants_then_diffusers_and_the_ratio_table(tmp_path: Path) -> None:
    tt.main([*BASE, "--variants", "plain_ops", "channels_last", "--out", str(tmp_path)])
    rows = _rows(tmp_path)
    assert [r["side"] for r in rows] == ["ours", "ours:plain_ops", "ours:channels_last", "ref"]
    assert all(r["mode"] == "eager" and r["samples_per_s"] > 0 and r["gflop_per_step"] > 0 for r in rows)
    table = (tmp_path / "results.md").read_text()
    ref = rows[-1]["samples_per_s"]
    for r in rows[:-1]:  # every one of ours is a row against diffusers, with its speed ratio
        label = "Mel-UNet-75M" if r["side"] == "ours" else f"Mel-UNet-75M [{r['side'][5:]}]"
        assert f"| {label} | eager | 2 | {r['samples_per_s']:.1f} | {ref:.1f} | " in table
        assert f"{r['samples_per_s'] / ref:.2f}x" in table


def test_sides_keeps_only_the_sides_named(tmp_path: Path) -> None:
    tt.main(
        [*BASE, "--variants", "channels_last", "--sides", "ref", "ours:channels_last", "--out", str(tmp_path)]
    )
    assert [r["side"] for r in _rows(tmp_path)] == ["ours:channels_last", "ref"]
    tt.main([*BASE, "--sides", "ref", "--out", str(tmp_path / "ref")])
    assert [r["side"] for r in _rows(tmp_path / "ref")] == ["ref"]


def test_a_row_without_diffusers_is_in_the_table_and_written_at_once(tmp_path: Path, monkeypatch) -> None:
    """Under ``--sides ours`` the table still shows our row (dashes for diffusers'), and each row is on disk
    as soon as it is measured: a stage cut short inside a case's later rows keeps the earlier ones."""
    real = tt.time_training
    calls = []

    def cut_after_first(*args, **kwargs):  # the second row's timing is cut, as a stage's limit would
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tt, "time_training", cut_after_first)
    with pytest.raises(KeyboardInterrupt):
        tt.main([*BASE, "--variants", "channels_last", "--sides", "ours", "ours:channels_last",
                 "--out", str(tmp_path)])  # fmt: skip
    rows = _rows(tmp_path)
    assert [r["side"] for r in rows] == ["ours"]
    row = f"| Mel-UNet-75M | eager | 2 | {rows[0]['samples_per_s']:.1f} | - | - | "
    assert row in (tmp_path / "results.md").read_text()


def test_flop_count_does_not_depend_on_the_fused_path() -> None:
    """split_linear sums a packed projection's input gradient with addmm_, which FlopCounterMode leaves
    out by itself: the fused and the plain DiT must count the same FLOPs, the analytic GEMM count of
    its linear layers (forward 2·N·Din·Dout, backward twice that) plus the attention's."""
    import dataclasses

    from multidiff.nn.dit import DiT, DiTConfig

    torch = pytest.importorskip("torch")
    cfg = DiTConfig(in_channels=4, patch=(2, 2), width=64, depth=2, heads=4, num_classes=3)
    fused = DiT(cfg)
    plain = DiT(dataclasses.replace(cfg, fused_kernels=False))
    x, c, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([0, 2])

    def step(model: torch.nn.Module) -> torch.Tensor:
        return model(x, c, labels=y).square().mean()

    counts = [tt.count_flops(m, step, "cpu") for m in (fused, plain)]
    assert counts[0] == counts[1] > 0
    # the QKV projections alone: 2 blocks x (forward + 2 backward GEMMs) x 2·(B·L)·D·3D
    tokens = 2 * (8 // 2) * (8 // 2)
    assert counts[0] > 2 * 3 * 2 * tokens * 64 * 3 * 64


def test_the_by_channel_variant_turns_per_channel_statistics_on_in_every_norm() -> None:
    import unet_cases

    from multidiff.nn.layers import GroupNorm

    spec = unet_cases.case_mel_unet("cpu", tiny=True)
    norms = [m for m in spec["variants"]["by_channel_group_norm"]().modules() if isinstance(m, GroupNorm)]
    assert norms and all(m.by_channel for m in norms)
    assert not any(m.by_channel for m in spec["ours"].modules() if isinstance(m, GroupNorm))


def test_regional_compilation_compiles_the_blocks_of_a_copy_and_is_marked_in_the_table() -> None:
    """--ref-regional: the copy's down, mid and up blocks are compiled each on its own, the rest and the
    original model stay eager, the parameters are shared; its row stands against ours in the same mode."""
    import unet_cases

    ref = unet_cases.case_video_unet("cpu", tiny=True)["ref"]
    run = tt.regional_copy(ref)
    blocks = [*run.down_blocks, run.mid_block, *run.up_blocks]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)
    assert all(b._compiled_call_impl is None for b in (*ref.down_blocks, ref.mid_block, *ref.up_blocks))
    assert run.conv_in is ref.conv_in and run._compiled_call_impl is None
    assert [id(p) for p in run.parameters()] == [id(p) for p in ref.parameters()]
    row = dict(case="Video-UNet", batch=8, tflops=1.0, peak_gib=1.0)
    rows = [dict(row, side="ours", mode="compile", samples_per_s=150.0),
            dict(row, side="ref", mode="compile regional", samples_per_s=50.0)]  # fmt: skip
    assert "| Video-UNet | compile | 8 | 150.0 | 50.0 (regional) | 3.00x |" in tt.table(rows)
