"""benchmarks/profile_steps.py: the CPU smoke run (every default case profiled, tables written, shares summing
to the step), and the CUDA bookkeeping on hand-made profiler events (no GPU needed): kernels go to the op
that launched them, GPU annotation spans are not counted, a kernel's own name decides its category before
the op's, a copy under ``aten::_to_copy`` is a cast."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType
from torch.autograd.profiler_util import Kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_steps as ps  # noqa: E402

pytest.importorskip("diffusers")


def _category_shares(section: str) -> dict[str, float]:
    """The ``% of step`` column of a section's category table, by row (the step row left out)."""
    table = section.split("| category | ms/step | % of step |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in table.splitlines()]
    return {r[0].strip(): float(r[2]) for r in rows if "step" not in r[0]}


def test_tiny_cpu_run_profiles_every_default_case(tmp_path: Path) -> None:
    ps.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--modes",
            "eager",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--cudnn-benchmark",
            "--out",
            str(tmp_path),
        ]
    )
    result = json.loads((tmp_path / "profile.json").read_text())
    assert result["env"]["command"].endswith(f"--out {tmp_path}")
    assert result["env"]["cudnn_benchmark"] is True and torch.backends.cudnn.benchmark is False  # the run's only
    rows = result["rows"]
    assert [r["case"] for r in rows] == list(ps.DEFAULT_CASES)
    md = (tmp_path / "profile.md").read_text()
    sections = md.split("\n## ")[1:]
    assert len(sections) == len(rows)
    for r, section in zip(rows, sections):
        assert "error" not in r, r
        assert section.startswith(f"{r['name']} · multidiff · eager")
        assert r["step_ms"] > 0 and math.isfinite(r["tflops"]) and r["tflops"] > 0 and r["gflop_per_step"] > 0
        assert r["launches_per_step"] is None  # no kernels on the CPU
        assert set(r["categories_ms"]) == set(ps.CATEGORIES)
        # the category rows and the idle row make up the step, in the table and in the JSON
        shares = _category_shares(section)
        assert set(shares) == {*ps.CATEGORIES, "host outside ops"}
        assert sum(shares.values()) == pytest.approx(100.0, abs=0.5)
        assert sum(r["categories_ms"].values()) + r["idle_ms"] == pytest.approx(r["reference_ms"], rel=1e-6)
        assert r["categories_ms"]["matmul/conv"] > 0 and r["categories_ms"]["optimizer"] > 0
        # the op table: at most --top rows, sorted by time, each with a known category
        ops = re.findall(r"^\| (\d+) \| `([^`]+)` \| ([^|]+) \| [^|]+ \| ([\d.]+) \|", section, re.M)
        assert 0 < len(ops) <= 25 and [int(o[0]) for o in ops] == list(range(1, len(ops) + 1))
        assert [float(o[3]) for o in ops] == sorted((float(o[3]) for o in ops), reverse=True)
        assert all(o[2].split()[0] in ps.CATEGORIES for o in ops)
        assert not any(o[1].startswith("ProfilerStep") for o in ops)
    assert "| case | side | mode | batch | step ms |" in md and md.count("| multidiff | eager |") == len(rows)


def test_trace_needs_out() -> None:
    with pytest.raises(SystemExit):
        ps.main(["--tiny", "--device", "cpu", "--trace"])


def _op(name: str, kernels=(), parent=None) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        device_type=DeviceType.CPU,
        is_async=False,
        is_user_annotation=name.startswith(("Optimizer.", "ProfilerStep")),
        activity_type="user_annotation" if name.startswith(("Optimizer.", "ProfilerStep")) else "cpu_op",
        cpu_parent=parent,
        kernels=[Kernel(k, 0, us) for k, us in kernels],
        self_cpu_time_total=1.0,
    )


def _device(name: str, us: float, kind: str = "kernel") -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        device_type=DeviceType.CUDA,
        is_async=False,
        is_user_annotation=kind == "gpu_user_annotation",
        activity_type=kind,
        device_time_total=us,
    )


def _row(key: str, count: int, us: float, device: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        key=key,
        device_type=DeviceType.CUDA if device else DeviceType.CPU,
        count=count,
        self_device_time_total=us,
        self_cpu_time_total=1.0,
        is_user_annotation=False,
    )


def test_cuda_bookkeeping_on_hand_made_events() -> None:
    gemm, copy_k, gn, adam = (
        "sm90_xmma_gemm_bf16bf16_bf16f32",
        "void at::native::direct_copy_kernel_cuda",
        "triton_red_fused_native_group_norm_0",
        "multi_tensor_apply_kernel<FusedAdamMathFunctor>",
    )
    opt = _op("Optimizer.step#AdamW.step", [("Optimizer.step#AdamW.step", 500.0)])  # GPU span hung on the op
    to_copy = _op("aten::_to_copy")
    events = [
        _op("ProfilerStep#1", [("ProfilerStep*", 1000.0)]),
        _op("aten::mm", [(gemm, 300.0)]),
        _op("aten::copy_", [(copy_k, 40.0)], parent=to_copy),  # a cast
        _op("aten::copy_", [(copy_k, 60.0)]),  # a layout copy
        _op("triton_red_fused_native_group_norm_0", [(gn, 50.0)]),
        opt,
        _op("aten::_fused_adamw_", [(adam, 30.0)], parent=opt),
        _device("ProfilerStep*", 1000.0, "gpu_user_annotation"),
        _device("Optimizer.step#AdamW.step", 500.0, "gpu_user_annotation"),
        _device(gemm, 300.0),
        _device(copy_k, 40.0),
        _device(copy_k, 60.0),
        _device(gn, 50.0),
        _device(adam, 30.0),
        _device("Memcpy HtoD (Pageable -> Device)", 20.0, "gpu_memcpy"),  # launched outside any op
    ]
    averages = [
        _row("ProfilerStep*", 1, 1000.0),
        _row("aten::mm", 1, 300.0),
        _row("aten::copy_", 2, 100.0),
        _row("triton_red_fused_native_group_norm_0", 1, 50.0),
        _row("Optimizer.step#AdamW.step", 1, 500.0),
        _row("aten::_fused_adamw_", 1, 30.0),
        _row(gemm, 1, 300.0, device=True),
        _row(copy_k, 2, 100.0, device=True),
        _row("ProfilerStep*", 1, 1000.0, device=True),
    ]
    s = ps.summarise(events, averages, cuda=True, steps=1)
    assert s["busy_us"] == pytest.approx(500.0)  # 300 + 100 + 50 + 30 + 20, no annotation spans
    assert s["launches"] == 5
    assert s["categories_us"] == {
        "matmul/conv": 300.0,
        "attention": 0.0,
        "norm": 50.0,
        "elementwise/cast": 40.0,
        "copy/layout": 60.0,
        "optimizer": 30.0,
        "other": 20.0,  # the memcpy no op claimed
    }
    ops = {o["name"]: o for o in s["ops"]}
    assert list(ops) == [
        "aten::mm",
        "aten::copy_",
        "triton_red_fused_native_group_norm_0",
        "aten::_fused_adamw_",
    ]
    assert ops["aten::copy_"]["category"] == "copy/layout 60% / elementwise/cast 40%"
    assert ops["aten::copy_"]["calls"] == 2 and ops["aten::mm"]["us"] == 300.0
    assert [(k["name"], k["category"]) for k in s["kernels"]] == [
        (gemm, "matmul/conv"),
        (copy_k, "copy/layout 60% / elementwise/cast 40%"),
    ]


@pytest.mark.parametrize(
    "name, category",
    [
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "matmul/conv"),
        ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT", "matmul/conv"),
        ("void cudnn::ops::nchwToNhwcKernel<__nv_bfloat16>", "copy/layout"),
        ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", "attention"),
        ("triton_poi_fused_convolution_0", "elementwise/cast"),  # a bias add Inductor names after the conv
        ("triton_poi_fused_clone_3", "copy/layout"),
        ("triton_per_fused_native_group_norm_silu_2", "norm"),
        ("triton_red_fused_sum_4", "other"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", None),
    ],
)
def test_kernel_categories(name: str, category: str | None) -> None:
    assert ps.kernel_category(name) == category


def test_op_categories() -> None:
    assert ps.op_category("aten::convolution_backward") == "matmul/conv"
    assert ps.op_category("aten::addmm") == "matmul/conv"
    assert ps.op_category("aten::add_") == "elementwise/cast"
    assert ps.op_category("aten::native_group_norm_backward") == "norm"
    assert ps.op_category("aten::normal_") == "other"
    assert ps.op_category("aten::_scaled_dot_product_flash_attention") == "attention"
    assert ps.op_category("aten::cat") == "copy/layout" and ps.op_category("aten::clone") == "copy/layout"
    assert ps.op_category("aten::_to_copy") == "elementwise/cast"
    assert ps.op_category("aten::sum") == "other"
