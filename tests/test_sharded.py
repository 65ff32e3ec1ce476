"""FSDP2 (``--shard``) and sharded checkpoints through torch.distributed.checkpoint, on the CPU with gloo:
exact resume on two processes, a two-process checkpoint read and resumed in one process, the pipeline
weights equal to the gathered EMA, atomic saves, and the video recipe under torchrun."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from multidiff import train
from multidiff.core.denoiser import Denoiser
from multidiff.core.losses import LogNormal
from multidiff.nn.dit import DiT, DiTConfig
from multidiff.train import sharded
from multidiff.train.data import StreamLayout

# Two OpenMP threads on a shared two-core machine are many times slower than one.
torch.set_num_threads(1)

STEPS, BATCH, ACCUM = 4, 8, 2


class Clips:
    """Eight random clips {"x": [2, 4, 8, 8]} fixed by a seed."""

    def __init__(self, n: int = 8) -> None:
        self.x = torch.randn(n, 2, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i]}


def _net() -> Denoiser:
    torch.manual_seed(0)
    cfg = DiTConfig(
        in_channels=2, patch=(1, 2, 2), width=32, depth=2, heads=2, attention="factorised", noise_freq_dim=16
    )
    return Denoiser(DiT(cfg), "edm")


def train_dit(
    run: Path,
    steps: int,
    dist: train.DistInfo,
    *,
    activation_checkpointing: bool = False,
    fail_at: int | None = None,
    shard: bool = True,
) -> int:
    """A recipe's loop (start_training, Session) on a tiny video DiT with ``shard=True``; every checkpoint
    holds ``pipeline.safetensors``, the EMA weights copied into a plain module (what a pipeline folder holds).
    ``fail_at``: the save at that step raises while adding its files (a crash mid-save). Returns the step
    it started from (the checkpoint's when it resumed: a restart from 0 would end on the same bits)."""
    net = _net()
    plain = copy.deepcopy(net)  # the pipeline's copy, taken before sharding
    args = train.TrainSettings(
        steps=steps, batch=BATCH, accum=ACCUM, lr=1e-2, warmup=0, ema_decay=0.9, precision="fp32",
        log_every=1, ckpt_every=2, keep=5, shard=shard, activation_checkpointing=activation_checkpointing,
    )  # fmt: skip
    ckpt = train.latest_checkpoint(run)
    training = train.start_training(net, args, ckpt, dist)
    if dist.distributed:
        assert sharded.is_sharded(training.model)
    to_pipe = train.EmaToPipeline(training.ema, plain, net)
    data = Clips()
    micro = BATCH // (ACCUM * dist.world_size)
    layout = StreamLayout(len(data), micro, ACCUM, dist.world_size, seed=3)
    step = start = training.step
    batches = iter(train.stream_loader(data, layout, rank=dist.rank, start_step=step))

    def pipeline_file(folder: Path) -> None:
        if step == fail_at:
            raise OSError("disk gone")
        to_pipe()
        save_file(
            {k: v.contiguous() for k, v in plain.state_dict().items()}, str(folder / "pipeline.safetensors")
        )

    def loss_fn(m: torch.nn.Module, b: dict) -> torch.Tensor:
        return train.diffusion_loss(m, b["x"], LogNormal(0.5, 1.2), seeds=b["sample_seed"])

    with train.Session(
        run, args, training, dist=dist, device=dist.device, config={"lr": 1e-2},
        extra_state=lambda: {"guard": training.guard.state_dict()}, extra_files=pipeline_file,
    ) as session:  # fmt: skip
        while step < steps:
            step = session.step(step, [next(batches) for _ in range(ACCUM)], loss_fn)
            if not session.end_step(step, layout.position(step).to_dict()):
                break
    return start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    dist = train.setup_distributed("cpu")
    try:
        train_dit(Path(out) / "whole", STEPS, dist, activation_checkpointing=True)  # uninterrupted
        train_dit(Path(out) / "parts", 2, dist, activation_checkpointing=True)  # stopped at step 2 ...
        assert train_dit(Path(out) / "parts", STEPS, dist, activation_checkpointing=True) == 2  # ... resumed
    finally:
        train.cleanup_distributed()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def _all(ckpt: train.Checkpoint) -> dict[str, torch.Tensor]:
    out = {}
    for part in ("model", "ema", "optim"):
        out.update({f"{part}.{k}": v for k, v in sharded.read_sharded_tensors(ckpt, part).items()})
    return out


def test_fsdp2_resume_on_two_processes_is_bit_identical(two_process_runs: Path) -> None:
    whole = train.latest_checkpoint(two_process_runs / "whole")
    parts = train.latest_checkpoint(two_process_runs / "parts")
    assert whole.step == parts.step == STEPS
    assert sharded.is_sharded_checkpoint(whole) and whole.state["world_size"] == 2
    assert (whole.path / "dcp" / ".metadata").is_file() and not (whole.path / "model.safetensors").exists()
    a, b = _all(whole), _all(parts)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("optim.state.") and k.endswith("exp_avg_sq") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(whole.tensors("rng")["rank1.torch"], parts.tensors("rng")["rank1.torch"])
    # training moved the weights, so the comparison means something
    init = _net().state_dict()
    assert max(float((a[f"model.{k}"] - v).abs().max()) for k, v in init.items()) > 1e-3


def test_two_process_checkpoint_reads_in_one_process_as_the_pipeline_weights(two_process_runs: Path) -> None:
    ckpt = train.latest_checkpoint(two_process_runs / "whole")
    ema = sharded.read_sharded_tensors(ckpt, "ema")  # one process, no process group
    pipe = load_file(str(ckpt.path / "pipeline.safetensors"))  # written by rank 0 from the gathered EMA
    assert sorted(ema) == sorted(pipe) == sorted(_net().state_dict())
    for k, v in pipe.items():
        assert torch.equal(ema[k], v), k
    model = sharded.read_sharded_tensors(ckpt, "model")
    plain = _net()
    plain.load_state_dict(model)  # full shapes, a plain single-file model
    assert not torch.equal(model["backbone.final_proj.weight"], ema["backbone.final_proj.weight"])


def test_two_process_checkpoint_resumes_on_one_process(two_process_runs: Path, tmp_path: Path) -> None:
    """The step-2 checkpoint of the two-process run, resumed by one process (DCP reshards), ends where the
    two-process run ended, up to float32 reduction order."""
    src = two_process_runs / "whole"
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(src / "ckpt-00000002", run / "ckpt-00000002")
    (run / "latest").write_text("ckpt-00000002\n")
    assert train_dit(run, STEPS, train.DistInfo()) == 2
    one = train.latest_checkpoint(run)
    assert one.step == STEPS and one.state["world_size"] == 1
    a, b = _all(train.latest_checkpoint(src)), _all(one)
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-5, msg=k)


def test_crash_mid_save_leaves_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_dit(run, 2, train.DistInfo())
    (run / ".tmp-dcp-00000009-dead").mkdir()  # shards of a save killed earlier
    (run / ".tmp-dcp-00000009-dead" / "__0_0.distcp").write_bytes(b"partial")
    with pytest.raises(OSError, match="disk gone"):
        train_dit(run, STEPS, train.DistInfo(), fail_at=STEPS)  # the save at step 4 dies in its files
    assert (run / "latest").read_text().strip() == "ckpt-00000002"
    assert not (run / "ckpt-00000004").exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".tmp-")]  # no half-written folder left
    ckpt = train.latest_checkpoint(run)
    assert ckpt.step == 2 and sharded.is_sharded_checkpoint(ckpt)
    assert train_dit(run, STEPS, train.DistInfo()) == 2  # rerun: resumes from step 2
    assert train.latest_checkpoint(run).step == STEPS


def test_a_sharded_checkpoint_resumes_without_shard(tmp_path: Path) -> None:
    """Dropping ``--shard`` on resume: the DCP checkpoint loads into the plain module, later checkpoints are
    single files, and the run ends where one that kept ``--shard`` ends (one process: the same arithmetic)."""
    train_dit(tmp_path / "kept", STEPS, train.DistInfo())
    train_dit(tmp_path / "dropped", 2, train.DistInfo())
    assert train_dit(tmp_path / "dropped", STEPS, train.DistInfo(), shard=False) == 2
    kept, dropped = train.latest_checkpoint(tmp_path / "kept"), train.latest_checkpoint(tmp_path / "dropped")
    assert not sharded.is_sharded_checkpoint(dropped) and dropped.has("model")
    for part, stem in (("model", "model"), ("ema", "ema")):
        a, b = sharded.read_sharded_tensors(kept, part), dropped.tensors(stem)
        assert sorted(a) == sorted(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_sharded_checkpoint_without_its_index_is_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_dit(run, STEPS, train.DistInfo())
    (run / "ckpt-00000004" / "dcp" / ".metadata").unlink()
    with pytest.warns(UserWarning, match="metadata is missing"):
        ckpt = train.latest_checkpoint(run)
    assert ckpt.step == 2


def test_shard_units_are_the_blocks() -> None:
    from multidiff.nn.unet import UNet, UNetConfig, UNetLayer

    net = _net()
    assert sharded.shard_units(net) == list(net.backbone.blocks)
    unet = UNet(
        UNetConfig(
            channels=(8, 16), num_res_blocks=1, attention_levels=(), norm_groups=4, emb_dim=16, head_dim=8
        )
    )
    units = sharded.shard_units(unet)
    assert units and all(isinstance(u, UNetLayer) for u in units)
    assert len(units) == sum(isinstance(m, UNetLayer) for m in unet.modules())
    with pytest.raises(ValueError, match="no DiT block or U-Net stage"):
        sharded.apply_activation_checkpointing(torch.nn.Linear(2, 2))


def test_activation_checkpointing_keeps_names_and_gradients() -> None:
    x = torch.randn(2, 2, 4, 8, 8)
    sigma = torch.tensor([0.5, 2.0])
    grads = []
    for ac in (False, True):
        net = _net()
        torch.nn.init.normal_(net.backbone.final_proj.weight, std=0.1)  # a non-zero output
        names = list(net.state_dict())
        if ac:
            assert sharded.apply_activation_checkpointing(net) == 2
        assert list(net.state_dict()) == names
        net(x, sigma).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert sorted(grads[0]) == sorted(grads[1])
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_video_recipe_with_shard_under_torchrun_then_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 train_video.py --backbone dit --shard`` (gloo): a sharded checkpoint, a
    preview from the gathered EMA, the normal pipeline folder; the same command on one process resumes it."""
    from multidiff.cli import load_recipe
    from multidiff.pipeline import VideoPipeline

    sys.path.insert(0, str(Path(__file__).parent))
    from test_recipe_video import common_args, moving_squares

    data = moving_squares(tmp_path / "data")
    run = tmp_path / "run"
    args = [*common_args(data, run, 2), "--backbone", "dit", "--shard", "--activation-checkpointing"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run([*cmd, "-m", "multidiff.recipes.train_video", *args], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = train.latest_checkpoint(run)
    assert ckpt.step == 2 and sharded.is_sharded_checkpoint(ckpt) and ckpt.state["world_size"] == 2
    assert list((run / "previews" / "step-00000002").glob("*.gif"))
    pipe = VideoPipeline.from_pretrained(run / "pipeline")  # the normal pipeline folder
    ema = sharded.read_sharded_tensors(ckpt, "ema")
    for k, v in pipe.denoiser.state_dict().items():
        assert torch.equal(v, ema[k]), k

    trainer = load_recipe("train_video.py")
    trainer.main([*common_args(data, run, 3), "--backbone", "dit", "--shard"])  # one process resumes
    ckpt = train.latest_checkpoint(run)
    assert ckpt.step == 3 and ckpt.state["world_size"] == 1
    pipe = VideoPipeline.from_pretrained(run / "pipeline")
    ema = sharded.read_sharded_tensors(ckpt, "ema")
    for k, v in pipe.denoiser.state_dict().items():
        assert torch.equal(v, ema[k]), k
    video = pipe.generate(1, 4, seed=0, steps=2, progress=False)
    assert torch.isfinite(torch.as_tensor(video[0], dtype=torch.float32)).all()
