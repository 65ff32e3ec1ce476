"""benchmarks/matmul_floor.py: every matmul, convolution and attention call of a forward is recorded (as many
as the model's Linear and Conv modules and attention layers make), replayed alone on fresh tensors of the
same layouts, and the loop's floor set against a target."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import matmul_floor as mf  # noqa: E402

torch.set_num_threads(1)


def _module_calls(net: nn.Module, forward) -> dict[str, int]:
    """Linear and Conv modules' forward calls during ``forward()``, counted with hooks."""
    calls = {"matmul": 0, "convolution": 0}

    def hook(kind: str):
        def count(*_):
            calls[kind] += 1

        return count

    handles = [m.register_forward_hook(hook("matmul" if isinstance(m, nn.Linear) else "convolution"))
               for m in net.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]  # fmt: skip
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return calls


def test_the_record_holds_every_linear_convolution_and_attention_call() -> None:
    """The DiT: one GEMM per Linear call. The video U-Net: one convolution per Conv call, and at least one
    GEMM per Linear call (its attention across frames runs q, k and v as three GEMMs on the packed weight)."""
    for name in ("DiT-XL/2-b1", "moving-digits"):
        case = mf.CASES[name](True)
        args, kwargs = case.inputs(torch.device("cpu"))
        forward = functools.partial(case.net, *args, **kwargs)
        ops = mf.record(forward)
        calls = _module_calls(case.net, forward)
        kinds = {k: sum(o.kind == k for o in ops) for k in ("matmul", "convolution", "attention")}
        assert kinds["convolution"] == calls["convolution"], (name, kinds, calls)
        if name.startswith("DiT"):
            assert kinds["matmul"] == calls["matmul"] and kinds["convolution"] == 0, (name, kinds, calls)
        else:
            assert calls["matmul"] < kinds["matmul"] <= 3 * calls["matmul"], (name, kinds, calls)
        assert kinds["attention"] > 0, name
        for o in ops:  # tensors are recorded as layouts, never kept
            flat = [*o.args, *o.kwargs.values()]
            assert not any(isinstance(v, torch.Tensor) for v in flat), o


def test_replay_runs_the_recorded_ops_on_tensors_of_their_layouts() -> None:
    a = torch.randn(6, 4)[:, :3]  # a strided view: its layout must survive
    b = torch.randn(3, 5)
    ops = mf.record(lambda: (a @ b, torch.addmm(torch.zeros(5), a, b)))
    assert [o.op for o in ops] == [torch.ops.aten.mm.default, torch.ops.aten.addmm.default]
    assert ops[0].args[0] == mf.Layout((6, 3), (4, 1), torch.float32)
    with mf.Recorder() as again:
        mf.materialise(ops, torch.device("cpu"))()
    seen = [(o.op, o.args) for o in again.ops]
    assert seen == [(o.op, o.args) for o in ops]


def test_smoke_run_writes_the_floor_against_its_target(tmp_path: Path) -> None:
    rows = mf.main(["--tiny", "--device", "cpu", "--runs", "1", "--only", "DiT-XL/2-b1",
                    "--target", "DiT-XL/2-b1=1e-9", "--out", str(tmp_path)])  # fmt: skip
    (row,) = rows
    assert row["loop_s"]["ops_alone"] == row["step_s"]["ops_alone"] * row["steps"] > 0
    assert set(row["ops"]) == {"matmul", "attention"}
    saved = json.loads((tmp_path / "matmul_floor.json").read_text())
    assert saved["rows"][0]["ops"] == row["ops"] and saved["env"]["device"] == "cpu"
    text = (tmp_path / "matmul_floor.md").read_text()
    ratio = row["loop_s"]["ops_alone"] / 1e-9
    assert f"| {ratio:.2f} |" in text
