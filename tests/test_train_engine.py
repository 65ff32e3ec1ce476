"""Training engine: atomic checkpoints, exact resume, DDP parity, accumulation, the non-finite guard,
the data stream, warm-up, logging and previews."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from multidiff import train
from multidiff.core.denoiser import Denoiser
from multidiff.core.ema import EMA
from multidiff.core.losses import LogNormal
from multidiff.train.checkpoint import optimizer_state_from_tensors, optimizer_state_to_tensors
from multidiff.train.data import DataPosition, StreamLayout, epoch_permutation

# Two OpenMP threads on a shared two-core machine are many times slower than one.
torch.set_num_threads(1)


class ToyNet(nn.Module):
    """A tiny backbone following the contract: conv + noise and label embeddings (+ optional dropout)."""

    def __init__(self, num_classes: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 1, 3, padding=1)
        self.noise = nn.Linear(1, 8)
        self.label = nn.Embedding(num_classes + 1, 8)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, c_noise, *, labels=None):
        h = self.conv1(x) + self.noise(c_noise[:, None])[:, :, None, None]  # (B, 8, H, W)
        if labels is not None:
            h = h + self.label(labels)[:, :, None, None]
        return self.conv2(self.drop(torch.nn.functional.silu(h)))  # (B, 1, H, W)


class ToyData:
    """Ten items {"x": [1, 8, 8], "label": int} fixed by a seed."""

    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "label": self.labels[i]}


def train_toy(
    run_dir: Path | None,
    steps: int,
    dist: train.DistInfo,
    *,
    micro: int,
    accum: int = 1,
    dropout: float = 0.0,
    ckpt_every: int = 3,
    stop_after: int | None = None,
    steps_run: list[int] | None = None,
) -> tuple[nn.Module, EMA, torch.optim.Optimizer]:
    """The recipe's loop in miniature, built from the engine's helpers; ``steps_run`` collects the steps
    this invocation took (a resume takes only those after its checkpoint)."""
    torch.manual_seed(0)
    model = Denoiser(ToyNet(dropout=dropout), "edm")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMA(model, 0.9)
    guard = train.NonFiniteGuard(3)
    data = ToyData()
    step = 0
    ckpt = train.latest_checkpoint(run_dir) if run_dir is not None else None
    if ckpt is not None:
        step = train.restore_training_state(ckpt, dist=dist, model=model, optimizer=opt, ema=ema)
        guard.load_state_dict(ckpt.state["extra"]["guard"])
    ddp = train.wrap_ddp(model, dist)
    layout = StreamLayout(len(data), micro, accum, dist.world_size, seed=7)
    batches = iter(train.stream_loader(data, layout, rank=dist.rank, start_step=step))

    def loss_fn(m: nn.Module, b: dict) -> torch.Tensor:
        labels = train.drop_labels(b["label"], b["sample_seed"], 0.3, 3)
        return train.diffusion_loss(m, b["x"], LogNormal(), seeds=b["sample_seed"], cond={"labels": labels})

    while step < steps:
        train.set_lr(opt, train.warmup_lr(step, 1e-2, 3))
        train.optimizer_step(
            ddp,
            opt,
            [next(batches) for _ in range(accum)],
            loss_fn,
            step=step,
            device=dist.device,
            ema=ema,
            guard=guard,
        )
        step += 1
        if steps_run is not None:
            steps_run.append(step)
        if run_dir is not None and step % ckpt_every == 0:
            train.save_training_state(
                run_dir,
                step,
                dist=dist,
                model=ddp,
                optimizer=opt,
                ema=ema,
                config={"lr": 1e-2},
                data_position=layout.position(step).to_dict(),
                extra_state={"guard": guard.state_dict()},
            )
        if stop_after is not None and step == stop_after:
            break
    return model, ema, opt


def _all_tensors(model: nn.Module, ema: EMA, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    out.update({f"opt.{k}": v for k, v in optimizer_state_to_tensors(opt)[0].items()})
    return out


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_keep_last(tmp_path) -> None:
    for step in (1, 2, 3, 4):
        train.save_checkpoint(
            tmp_path, step, tensors={"w": {"a": torch.full((3,), float(step))}}, state={"k": step}, keep=2
        )
    kept = [c.step for c in train.list_checkpoints(tmp_path)]
    assert kept == [3, 4]
    latest = train.latest_checkpoint(tmp_path)
    assert latest.step == 4 and latest.state["k"] == 4
    assert (tmp_path / "latest").read_text().strip() == "ckpt-00000004"
    assert torch.equal(latest.tensors("w")["a"], torch.full((3,), 4.0))


def test_crash_mid_write_leaves_previous_checkpoint(tmp_path) -> None:
    train.save_checkpoint(tmp_path, 5, tensors={"w": {"a": torch.arange(4.0)}}, state={"k": 5})

    def crash(folder: Path) -> None:
        assert any(folder.iterdir())  # the tensors are already half-written into the temporary folder
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(tmp_path, 6, tensors={"w": {"a": torch.zeros(4)}}, state={"k": 6}, extra=crash)
    assert not (tmp_path / "ckpt-00000006").exists()
    ckpt = train.latest_checkpoint(tmp_path)
    assert ckpt.step == 5 and torch.equal(ckpt.tensors("w")["a"], torch.arange(4.0))

    # A hard kill leaves a temporary folder and maybe a stale pointer: both are ignored, then cleaned.
    (tmp_path / ".tmp-ckpt-00000007-dead").mkdir()
    (tmp_path / ".tmp-ckpt-00000007-dead" / "w.safetensors").write_bytes(b"partial")
    (tmp_path / "latest").write_text("ckpt-00000007\n")
    ckpt = train.latest_checkpoint(tmp_path)
    assert ckpt.step == 5 and torch.equal(ckpt.tensors("w")["a"], torch.arange(4.0))
    train.save_checkpoint(tmp_path, 8, tensors={"w": {"a": torch.ones(4)}}, state={})
    assert not (tmp_path / ".tmp-ckpt-00000007-dead").exists()
    assert train.latest_checkpoint(tmp_path).step == 8


def test_resume_config_mismatch_is_refused_with_the_differences() -> None:
    train.check_resume_config(
        {"lr": 1e-3, "steps": 10, "dims": (1, 2)},
        {"lr": 1e-3, "steps": 20, "dims": [1, 2]},
        ignore=("steps",),
    )
    with pytest.raises(train.ResumeConfigError, match=r"batch: 8 in the checkpoint, 4 now") as err:
        train.check_resume_config(
            {"batch": 8, "lr": 1.0}, {"batch": 4, "lr": 1.0, "new": 1}, where="RUN/ckpt"
        )
    assert "new: '<not set>' in the checkpoint, 1 now" in str(err.value) and "RUN/ckpt" in str(err.value)


def test_optimizer_state_flattening_round_trip() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    for _ in range(2):
        model(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    tensors, structure = optimizer_state_to_tensors(opt)
    json.dumps(structure)  # JSON-serialisable
    opt2 = torch.optim.AdamW(nn.Linear(4, 3).parameters(), lr=0.5)
    optimizer_state_from_tensors(opt2, tensors, json.loads(json.dumps(structure)))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert b["param_groups"][0]["betas"] == (0.8, 0.95)
    for pid in a["state"]:
        for key in a["state"][pid]:
            assert torch.equal(a["state"][pid][key], b["state"][pid][key])


def test_resume_is_bit_identical(tmp_path) -> None:
    one = train.DistInfo()
    full = _all_tensors(*train_toy(tmp_path / "a", 6, one, micro=4, dropout=0.2))
    # "Crash" after step 4 (last checkpoint at 3), then rerun the same command: resumes from step 3.
    train_toy(tmp_path / "b", 6, one, micro=4, dropout=0.2, stop_after=4)
    assert train.latest_checkpoint(tmp_path / "b").step == 3
    taken: list[int] = []
    resumed = _all_tensors(*train_toy(tmp_path / "b", 6, one, micro=4, dropout=0.2, steps_run=taken))
    assert taken == [4, 5, 6]  # resumed after the checkpoint, not started again (which ends on the same bits)
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    # The state after the checkpoint's 3 steps differs from the end (the comparison can fail).
    fresh = _all_tensors(*train_toy(None, 3, one, micro=4, dropout=0.2))
    assert not torch.equal(fresh["model.backbone.conv1.weight"], full["model.backbone.conv1.weight"])


def test_gradient_accumulation_matches_the_full_batch() -> None:
    one = train.DistInfo()
    a, _, _ = train_toy(None, 3, one, micro=4)
    b, _, _ = train_toy(None, 3, one, micro=2, accum=2)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-5, msg=k)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    dist = train.setup_distributed("cpu")
    try:
        model, ema, _ = train_toy(Path(out) / "run", 3, dist, micro=2)
        if rank == 0:
            from safetensors.torch import save_file

            save_file(
                {k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(out) / "ddp.safetensors")
            )
    finally:
        train.cleanup_distributed()


def test_ddp_two_processes_match_one_process(tmp_path) -> None:
    from safetensors.torch import load_file

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = load_file(str(tmp_path / "ddp.safetensors"))
    single, _, _ = train_toy(None, 3, train.DistInfo(), micro=4)
    moved = 0.0
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=0, atol=1e-5, msg=k)
    torch.manual_seed(0)
    init = Denoiser(ToyNet(), "edm").state_dict()
    moved = max(float((init[k] - v).abs().max()) for k, v in single.state_dict().items())
    assert moved > 1e-3  # training changed the weights, so the comparison means something
    # rank 0 wrote the checkpoint with both ranks' RNG states
    ckpt = train.latest_checkpoint(tmp_path / "run")
    assert ckpt.step == 3 and ckpt.state["world_size"] == 2 and len(ckpt.state["rng"]) == 2


# ---------------------------------------------------------------------------------------------------
# Non-finite guard
# ---------------------------------------------------------------------------------------------------


def test_non_finite_guard_skips_then_stops() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = train.NonFiniteGuard(max_consecutive=3)
    x = torch.randn(4, 3)
    bad = {1, 3, 4, 5}

    def loss_fn(m: nn.Module, step: int) -> torch.Tensor:
        loss = m(x).square().squeeze(1)
        return loss * float("nan") if step in bad else loss

    dev = torch.device("cpu")
    before = model.weight.detach().clone()
    assert train.optimizer_step(model, opt, [0], loss_fn, step=0, device=dev, guard=guard).applied
    after0 = model.weight.detach().clone()
    assert not torch.equal(before, after0)
    r = train.optimizer_step(model, opt, [1], loss_fn, step=1, device=dev, guard=guard)
    assert not r.applied and torch.equal(model.weight, after0)  # skipped: weights untouched
    assert all(p.grad is None for p in model.parameters())
    assert train.optimizer_step(model, opt, [2], loss_fn, step=2, device=dev, guard=guard).applied
    assert guard.skipped == 1 and guard.consecutive == 0
    train.optimizer_step(model, opt, [3], loss_fn, step=3, device=dev, guard=guard)
    train.optimizer_step(model, opt, [4], loss_fn, step=4, device=dev, guard=guard)
    with pytest.raises(train.NonFiniteLossError, match="3 consecutive steps .*step 5"):
        train.optimizer_step(model, opt, [5], loss_fn, step=5, device=dev, guard=guard)
    assert guard.skipped == 4


# ---------------------------------------------------------------------------------------------------
# Data stream, warm-up, logging, previews
# ---------------------------------------------------------------------------------------------------


def test_stream_is_deterministic_and_independent_of_the_split() -> None:
    n = 7
    one = StreamLayout(n, micro_batch=4, accum=1, world_size=1, seed=3)
    two = StreamLayout(n, micro_batch=1, accum=2, world_size=2, seed=3)
    for step in range(5):
        a = one.micro_batch_slots(step, 0, 0)
        b = sorted(s for m in range(2) for r in range(2) for s in two.micro_batch_slots(step, m, r))
        assert sorted(a) == b
    # every epoch is a permutation, and epochs differ
    p0, p1 = epoch_permutation(n, 3, 0), epoch_permutation(n, 3, 1)
    assert sorted(p0) == list(range(n)) and not np.array_equal(p0, p1)
    assert one.position(5) == DataPosition(20 // 7, 20 % 7) and one.step_of(one.position(5)) == 5
    # per-sample seeds depend on (seed, epoch, index) only
    ds = train.data.StreamDataset(ToyData(), seed=3)
    assert int(ds[(1, 2, 5)]["sample_seed"]) == train.derive_seed(3, 1, 2)
    assert int(ds[(1, 2, 5)]["sample_seed"]) != int(ds[(1, 3, 5)]["sample_seed"])


def test_warmup_lr() -> None:
    assert [train.warmup_lr(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert train.warmup_lr(0, 0.1, 0) == 0.1


def test_run_logger_writes_jsonl_and_truncates_on_resume(tmp_path) -> None:
    log = train.RunLogger(tmp_path, 10, 0, progress=False, tensorboard=False)
    for step in (2, 4, 6):
        log.count(8)
        log.log(step, loss=float(step), lr=0.1)
    log.log(7, loss=float("nan"))
    log.close()
    records = train.read_log(tmp_path)
    assert (
        [r["step"] for r in records] == [2, 4, 6, 7]
        and records[0]["loss"] == 2.0
        and records[-1]["loss"] == "nan"
    )
    assert records[0]["samples_per_s"] > 0
    train.RunLogger(tmp_path, 10, 4, progress=False, tensorboard=False).close()  # resumed at step 4
    assert [r["step"] for r in train.read_log(tmp_path)] == [2, 4]
    assert not train.RunLogger(tmp_path, 10, 0, enabled=False).log(3, loss=1.0)  # other ranks write nothing


def test_mel_png_preview(tmp_path) -> None:
    import imageio.v3 as iio

    mel = torch.zeros(2, 5, 7)
    mel[0, 0, :] = 1.0  # the lowest bin of channel 0 is bright
    path = train.save_mel_png(mel, tmp_path / "m.png", scale=1)
    img = iio.imread(path)
    assert img.shape == (10, 7, 3) and img.dtype == np.uint8
    assert img[4].mean() > 200 and img[0].mean() < 30  # low frequency at the bottom of channel 0


def test_session_max_minutes_stops_with_a_checkpoint(tmp_path, capsys) -> None:
    """``--max-minutes``: a recipe's loop over a :class:`train.Session` stops at the first step past the
    deadline, checkpointed there, and the same loop started again from that checkpoint runs on to ``--steps``."""
    one = train.DistInfo()
    data = ToyData()
    layout = StreamLayout(len(data), 4, 1, 1, seed=7)

    def run(max_minutes: float | None) -> tuple[int, int]:
        """(the step it started at, the step it stopped at)"""
        torch.manual_seed(0)
        model = Denoiser(ToyNet(), "edm")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        ema = EMA(model, 0.9)
        step = 0
        ckpt = train.latest_checkpoint(tmp_path)
        if ckpt is not None:
            step = train.restore_training_state(ckpt, dist=one, model=model, optimizer=opt, ema=ema)
        start = step
        batches = iter(train.stream_loader(data, layout, rank=0, start_step=step))
        args = train.TrainSettings(
            steps=5, batch=4, lr=1e-2, warmup=0, ema_decay=0.9, grad_clip=1.0, log_every=1, preview_every=0,
            ckpt_every=100, keep=2, precision="fp32", max_minutes=max_minutes,
        )  # fmt: skip
        training = train.Training(model, opt, ema, train.NonFiniteGuard(3), step)
        loss_fn = lambda m, b: train.diffusion_loss(m, b["x"], LogNormal(), seeds=b["sample_seed"])  # noqa: E731
        with train.Session(tmp_path, args, training, dist=one, device=torch.device("cpu"), config={"lr": 1e-2},
                           extra_state=dict, extra_files=lambda p: None) as session:  # fmt: skip
            while step < args.steps:
                step = session.step(step, [next(batches)], loss_fn)
                if not session.end_step(step, layout.position(step).to_dict()):
                    break
        return start, step

    assert run(0.0) == (0, 1)  # a deadline already past: one step, then stop
    assert train.latest_checkpoint(tmp_path).step == 1
    assert "--max-minutes 0 reached at step 1" in capsys.readouterr().out
    assert run(None) == (1, 5)  # rerun: resumes at step 1 and finishes
    assert train.latest_checkpoint(tmp_path).step == 5


def test_resuming_refuses_a_data_position_the_step_does_not_lead_to(tmp_path) -> None:
    """A checkpoint whose stored data position differs from the one its step leads to is refused (the data
    stream would silently skip or repeat samples), unless --allow-data-change."""
    from types import SimpleNamespace

    layout = train.StreamLayout(10, 2, 1, 1, 0)
    ckpt = SimpleNamespace(path=tmp_path / "ckpt-00000004", state={"data": layout.position(4).to_dict()})
    train.check_data_position(ckpt, layout.position(4).to_dict(), 4, False)  # consistent: accepted
    train.check_data_position(None, layout.position(4).to_dict(), 4, False)  # a new run: nothing to check
    moved = train.StreamLayout(12, 2, 1, 1, 0).position(7).to_dict()
    assert moved != ckpt.state["data"]
    with pytest.raises(ValueError, match="ckpt-00000004: its data position .* does not follow from step 7"):
        train.check_data_position(ckpt, moved, 7, False)
    train.check_data_position(ckpt, moved, 7, True)  # --allow-data-change
