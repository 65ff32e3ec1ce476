"""``--fp8`` (multidiff.train.fp8): which linears float8 takes, and that the swap keeps the parameters an
optimiser already holds and the checkpoint keys. float8 matmuls themselves need an Ada/Hopper GPU; the
timings and the loss parity are device benchmarks (``benchmarks/fp8_map.py``)."""

from __future__ import annotations

import pytest
import torch

from multidiff.nn.dit import DiT, DiTConfig
from multidiff.train.fp8 import fp8_filter, fp8_unavailable, to_float8_training


def tiny_dit() -> DiT:
    return DiT(DiTConfig(in_channels=4, width=64, depth=2, heads=2, num_classes=10))


def test_float8_takes_only_the_token_wise_block_linears() -> None:
    chosen = {name for name, m in tiny_dit().named_modules() if fp8_filter(m, name)}
    assert chosen == {
        f"blocks.{i}.{n}" for i in (0, 1) for n in ("attn.to_qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    }  # not the embedders, the adaLN projections or the output layer


def test_the_swap_keeps_the_parameters_and_the_state_keys() -> None:
    pytest.importorskip("torchao.float8", reason='torchao is an optional extra: pip install "multidiff[fp8]"')
    from torchao.float8.float8_linear import Float8Linear

    model = tiny_dit()
    params, keys = list(model.parameters()), list(model.state_dict())
    opt = torch.optim.AdamW(model.parameters())
    assert to_float8_training(model, "rowwise") is model
    swapped = {name for name, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert swapped == {name for name, m in tiny_dit().named_modules() if fp8_filter(m, name)}
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))  # the optimiser's own tensors
    assert list(model.state_dict()) == keys and opt.param_groups[0]["params"][0] is params[0]
    with pytest.raises(ValueError, match="float8 recipe must be one of"):
        to_float8_training(tiny_dit(), "blockwise")


def test_float8_is_refused_where_it_cannot_run() -> None:
    assert "needs CUDA" in fp8_unavailable("cpu")
