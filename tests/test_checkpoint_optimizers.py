"""multidiff.train.checkpoint: several optimisers in one checkpoint (GAN training) and the published result.

The single-optimiser layout of the diffusion trainers is covered by tests/test_train_engine.py; here the
``optimizers={"g": ..., "d": ...}`` extension used by recipes/train_vocoder.py, and :func:`publish_result`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from multidiff.train.checkpoint import (
    latest_checkpoint,
    publish_result,
    restore_training_state,
    save_training_state,
)
from multidiff.train.distributed import DistInfo

ONE = DistInfo()


def _gan(seed: int) -> tuple[nn.ModuleDict, dict[str, torch.optim.Optimizer]]:
    torch.manual_seed(seed)
    nets = nn.ModuleDict({"g": nn.Linear(3, 4), "d": nn.Linear(4, 1)})
    opts = {
        "g": torch.optim.AdamW(nets["g"].parameters(), 1e-2, betas=(0.8, 0.99)),
        "d": torch.optim.SGD(nets["d"].parameters(), 1e-2, momentum=0.9),
    }
    return nets, opts


def _train(nets: nn.ModuleDict, opts: dict[str, torch.optim.Optimizer], steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(5, 3)  # the global RNG: restored with the checkpoint
        loss_d = nets["d"](nets["g"](x).detach()).mean()
        opts["d"].zero_grad()
        loss_d.backward()
        opts["d"].step()
        loss_g = -nets["d"](nets["g"](x)).mean()
        opts["g"].zero_grad()
        loss_g.backward()
        opts["g"].step()


def test_several_optimisers_round_trip_exactly(tmp_path: Path) -> None:
    nets, opts = _gan(0)
    _train(nets, opts, 2)
    path = save_training_state(tmp_path, 2, dist=ONE, model=nets, optimizers=opts, config={"lr": 1e-2})
    assert path is not None
    assert {p.name for p in path.glob("*.safetensors")} == {
        "model.safetensors",
        "optimizer-g.safetensors",
        "optimizer-d.safetensors",
        "rng.safetensors",
    }
    state = json.loads((path / "state.json").read_text())
    assert set(state["optimizers"]) == {"optimizer-g", "optimizer-d"} and "optimizer" not in state
    _train(nets, opts, 3)
    expected = {k: v.clone() for k, v in nets.state_dict().items()}

    again, again_opts = _gan(1)  # other initial weights: all of it comes from the checkpoint
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None
    assert restore_training_state(ckpt, dist=ONE, model=again, optimizers=again_opts) == 2
    _train(again, again_opts, 3)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in expected.items())


def test_optimiser_names_must_match_the_checkpoint(tmp_path: Path) -> None:
    nets, opts = _gan(0)
    ckpt_dir = save_training_state(tmp_path / "two", 1, dist=ONE, model=nets, optimizers=opts)
    single = save_training_state(tmp_path / "one", 1, dist=ONE, model=nets, optimizer=opts["g"])
    assert ckpt_dir is not None and single is not None
    assert (single / "optimizer.safetensors").is_file()  # the diffusion trainers' layout is unchanged
    assert "optimizer" in json.loads((single / "state.json").read_text())
    two, one = latest_checkpoint(tmp_path / "two"), latest_checkpoint(tmp_path / "one")
    assert two is not None and one is not None
    with pytest.raises(ValueError, match="optimizer-d"):
        restore_training_state(two, dist=ONE, model=nets, optimizers={"g": opts["g"]})
    with pytest.raises(ValueError, match="optimiser state of"):
        restore_training_state(one, dist=ONE, model=nets, optimizers=opts)
    with pytest.raises(ValueError, match="optimiser state of"):
        restore_training_state(two, dist=ONE, model=nets, optimizer=opts["g"])
    with pytest.raises(ValueError, match="not both"):
        save_training_state(tmp_path / "x", 1, dist=ONE, model=nets, optimizer=opts["g"], optimizers=opts)
    with pytest.raises(ValueError, match="not both"):
        save_training_state(tmp_path / "x", 1, dist=ONE, model=nets)
    with pytest.raises(ValueError, match="name files"):
        save_training_state(tmp_path / "x", 1, dist=ONE, model=nets, optimizers={"g/1": opts["g"]})
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_publish_result_copies_the_newest_result_into_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (1, 2):
        nets, opts = _gan(step)

        def result(folder: Path, step: int = step) -> None:
            (folder / "vocoder").mkdir()
            (folder / "vocoder" / "weights.bin").write_bytes(bytes([step]) * 10)
            (folder / "vocoder" / "config.json").write_text(json.dumps({"step": step}))

        path = save_training_state(run, step, dist=ONE, model=nets, optimizers=opts, extra_files=result)
        assert path is not None
        written = publish_result(path / "vocoder", run)
        assert [p.name for p in written] == ["weights.bin", "config.json"]  # config.json last
    assert (run / "weights.bin").read_bytes() == bytes([2]) * 10
    assert json.loads((run / "config.json").read_text()) == {"step": 2}
    assert not list(run.glob(".tmp-*"))
