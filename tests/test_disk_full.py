"""A full disk (issue 11, item 6): the error names the path and says the disk is full, exits 1 without a
traceback, and leaves the last good checkpoint intact with nothing half-written beside it."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest
import safetensors.torch
import torch

from multidiff import train
from multidiff.cli import main as cli
from multidiff.io import write_audio

torch.set_num_threads(1)
FULL = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(
    tmp_path, tone_folder, monkeypatch, capsys
) -> None:
    data, run = tone_folder(), tmp_path / "run"
    argv = ["train", "audio", "--data", str(data), "--out", str(run), "--preset", "tiny", "--batch", "2",
            "--seconds", "0.25", "--ckpt-every", "2", "--device", "cpu"]  # fmt: skip
    assert cli([*argv, "--steps", "2"]) == 0
    good = train.latest_checkpoint(run)
    real = safetensors.torch.save_file

    def full_disk(tensors, filename, metadata=None):
        if "ckpt-00000004" in str(filename):
            raise safetensors.SafetensorError(FULL)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    assert cli([*argv, "--steps", "4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("multidiff: error:") and "No space left on device" in err and "ckpt-00000004" in err
    assert train.latest_checkpoint(run).step == good.step == 2
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no half-written folder
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert cli([*argv, "--steps", "4"]) == 0  # space again: it resumes from the good checkpoint


def test_a_full_disk_while_writing_audio_says_so(tmp_path, monkeypatch) -> None:
    import soundfile as sf

    def system_error(*args, **kwargs):
        raise RuntimeError("Error opening 'x': System error.")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sf, "write", system_error)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 100, 0))
    with pytest.raises(OSError, match="No space left on device") as err:
        write_audio(tmp_path / "a.wav", torch.zeros(1, 100), 16000)
    assert err.value.filename == str(tmp_path / "a.wav") and list(tmp_path.iterdir()) == []
