"""Resume on changed data and damaged checkpoints (issue 11, item 8): the data folder is identified by its
content, not its file count; ``--allow-data-change`` continues on an edited folder and says so in the log;
a run folder inside its own data folder resumes; a corrupt newest checkpoint is skipped, naming it, for the
one before."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from multidiff import train
from multidiff.cli import main as cli
from multidiff.io import write_audio

torch.set_num_threads(1)


def tone(path: Path, f: float) -> None:
    t = torch.arange(6000, dtype=torch.float64) / 16000
    write_audio(path, (0.3 * torch.sin(2 * math.pi * f * t)).float(), 16000)


def make_data(root: Path) -> Path:
    root.mkdir()
    for k in range(3):
        tone(root / f"{k}.wav", 200.0 * (k + 1))
    return root


def train_args(data: Path, run: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "audio", "--data", str(data), "--out", str(run), "--preset", "tiny", "--steps", str(steps),
            "--batch", "2", "--seconds", "0.25", "--ckpt-every", "2", "--device", "cpu", *extra]  # fmt: skip


@pytest.mark.parametrize("edit", ["add a file", "replace a file", "rename a file"])
def test_changed_data_is_refused_unless_allowed(edit: str, tmp_path: Path, capsys) -> None:
    data, run = make_data(tmp_path / "data"), tmp_path / "run"
    assert cli(train_args(data, run, 2)) == 0
    if edit == "add a file":
        tone(data / "new.wav", 900.0)
    elif edit == "replace a file":
        tone(data / "1.wav", 777.0)  # same name and count, other content
    else:
        (data / "2.wav").rename(data / "2b.wav")
    capsys.readouterr()
    assert cli(train_args(data, run, 4)) == 2
    err = capsys.readouterr().err
    assert "the data folder" in err and "changed" in err and "--allow-data-change" in err
    assert train.latest_checkpoint(run).step == 2
    assert cli(train_args(data, run, 4, "--allow-data-change")) == 0
    assert train.latest_checkpoint(run).step == 4
    assert any("changed data (--allow-data-change)" in str(r.get("event", "")) for r in train.read_log(run))


def test_a_run_that_counted_hidden_files_is_told_why_its_data_changed(tmp_path: Path, capsys) -> None:
    """Hidden files (a name or folder starting with '.') stopped being data: a run written when they were
    counted sees another fingerprint, and the refusal says that hidden files are why."""
    import json

    data, run = make_data(tmp_path / "data"), tmp_path / "run"
    (data / ".ipynb_checkpoints").mkdir()
    tone(data / ".ipynb_checkpoints" / "0.wav", 200.0)
    assert cli(train_args(data, run, 2)) == 0
    state_file = train.latest_checkpoint(run).path / "state.json"
    state = json.loads(state_file.read_text())
    assert state["config"]["num_files"] == 3  # the hidden copy is not data
    state["config"].update(num_files=4, data_fingerprint="0" * 32)  # as a run of the former rule saved it
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    assert cli(train_args(data, run, 4)) == 2
    err = capsys.readouterr().err
    assert "4 files then, 3 now; hidden files there" in err and "--allow-data-change" in err, err


def test_a_moved_data_folder_is_named_and_resumes_when_allowed(tmp_path: Path, capsys) -> None:
    """The same files in another folder: the refusal names both folders, and --allow-data-change goes on
    (before, that flag still refused the changed path, so a moved data folder could never be continued)."""
    import shutil

    data, run = make_data(tmp_path / "data"), tmp_path / "run"
    assert cli(train_args(data, run, 2)) == 0
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)  # copy2: same names, sizes and times
    capsys.readouterr()
    assert cli(train_args(moved, run, 4)) == 2
    err = capsys.readouterr().err
    assert f"it trained on {data.resolve()}" in err and str(moved.resolve()) in err and len(err.splitlines()) == 1
    assert cli(train_args(moved, run, 4, "--allow-data-change")) == 0
    assert train.latest_checkpoint(run).step == 4


def test_a_run_inside_its_data_folder_resumes_with_previews(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    run = data / "runs" / "r1"  # previews (wavs) land inside the data folder
    assert cli(train_args(data, run, 2, "--preview-every", "2", "--preview-num", "1")) == 0
    assert any((run / "previews").rglob("*.wav"))
    assert cli(train_args(data, run, 4, "--preview-every", "2", "--preview-num", "1")) == 0
    assert train.latest_checkpoint(run).step == 4


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    data, run = make_data(tmp_path / "data"), tmp_path / "run"
    assert cli(train_args(data, run, 4)) == 0
    newest = train.latest_checkpoint(run)
    weights = newest.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated on disk
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*ckpt-00000004.*model.safetensors"):
        ckpt = train.latest_checkpoint(run)
    assert ckpt.step == 2
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        assert cli(train_args(data, run, 4)) == 0  # resumes from step 2 and writes step 4 again
    assert train.latest_checkpoint(run).step == 4
