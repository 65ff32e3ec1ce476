"""The tiny audio recipe end to end: train, checkpoint, preview, resume exactly, refuse changed settings,
and generate wavs of the right length and rate, on synthetic tones with one corrupt file among them."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import soundfile as sf
import torch

from multidiff import train
from multidiff.cli import load_recipe
from multidiff.data.audio import SkippedFileWarning
from multidiff.io import write_audio
from multidiff.pipeline import AudioPipeline

torch.set_num_threads(1)

SR = 16000


def tone_folder(root: Path) -> Path:
    """Two classes of tones (low, high), three files each, plus a text file posing as a wav."""
    t = torch.arange(int(1.2 * SR), dtype=torch.float64) / SR
    for cls, base in (("low", 220.0), ("high", 1200.0)):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            f = base * (1 + 0.1 * k)
            write_audio(root / cls / f"{cls}{k}.wav", (0.4 * torch.sin(2 * math.pi * f * t)).float(), SR)
    (root / "high" / "corrupt.wav").write_text("this is not audio\n" * 50)
    return root


def common_args(data: Path, out: Path, steps: int) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", str(steps), "--batch", "2",
        "--seconds", "0.5", "--labels", "--ckpt-every", "2", "--preview-every", "2", "--preview-num", "1",
        "--sample-steps", "2", "--log-every", "1", "--device", "cpu",
    ]  # fmt: skip


def test_tiny_recipe_trains_resumes_and_generates(tmp_path, capsys) -> None:
    trainer = load_recipe("train_audio.py")
    data = tone_folder(tmp_path / "data")

    # An uninterrupted run of 4 steps.
    with pytest.warns(SkippedFileWarning) as caught:
        trainer.main(common_args(data, tmp_path / "full", 4))
    messages = [str(w.message) for w in caught]
    assert any("corrupt.wav" in m for m in messages) and any("skipped 1 of 7 files" in m for m in messages)
    # The same command, stopped after step 2 (a checkpoint), then rerun with more steps: it resumes.
    with pytest.warns(SkippedFileWarning):
        trainer.main(common_args(data, tmp_path / "run", 2))
    assert train.latest_checkpoint(tmp_path / "run").step == 2
    with pytest.warns(SkippedFileWarning):
        trainer.main(common_args(data, tmp_path / "run", 4))
    assert "resuming from" in capsys.readouterr().out

    # Bit-identical to the uninterrupted run: model, EMA and optimiser.
    a, b = train.latest_checkpoint(tmp_path / "full"), train.latest_checkpoint(tmp_path / "run")
    assert a.step == b.step == 4 and a.state["data"] == b.state["data"] == {"epoch": 1, "index": 2}
    for name in ("model", "ema", "optimizer"):
        ta, tb = a.tensors(name), b.tensors(name)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert [r["step"] for r in train.read_log(tmp_path / "run")] == [1, 2, 3, 4]
    for step in (2, 4):
        preview = tmp_path / "run" / "previews" / f"step-{step:08d}"
        assert (preview / "sample-00.wav").is_file() and (preview / "sample-00.png").is_file()

    # A changed setting that matters is refused, naming it, before the data is scanned (no skipped-file
    # warning is raised for the folder's broken file this time).
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedFileWarning)
        with pytest.raises(train.ResumeConfigError, match=r"lr: 0.001 in the checkpoint, 0.5 now"):
            trainer.main([*common_args(data, tmp_path / "run", 6), "--lr", "0.5"])

    # The saved pipeline: EMA weights, label names, sample rate.
    pipe = AudioPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.labels == ["high", "low"] and pipe.sample_rate == SR and pipe.window == 62
    assert pipe.x0_range[0].shape == (1, 32, 1) and bool((pipe.x0_range[0] < pipe.x0_range[1]).all())
    ema = b.tensors("ema")
    assert all(torch.equal(v, ema[k]) for k, v in pipe.denoiser.state_dict().items())

    # Generation: wavs of the right length and rate, longer than the training clips.
    gen = load_recipe("generate_audio.py")
    paths = gen.main(
        ["--ckpt", str(tmp_path / "run"), "--num", "3", "--batch", "2", "--seconds", "0.75", "--steps", "3",
         "--label", "low", "--guidance", "2", "--seed", "4", "--out", str(tmp_path / "gen"), "--quiet"]
    )  # fmt: skip
    assert [p.name for p in paths] == ["sample-000-seed4.wav", "sample-001-seed5.wav", "sample-002-seed6.wav"]
    for p in paths:
        info = sf.info(str(p))
        assert info.samplerate == SR and info.frames == 12000 and info.channels == 1
    # Clip k depends only on its seed, not on the batch it was generated in.
    again = gen.main(
        ["--ckpt", str(tmp_path / "run"), "--num", "1", "--seconds", "0.75", "--steps", "3", "--label", "low",
         "--guidance", "2", "--seed", "6", "--out", str(tmp_path / "gen1"), "--quiet"]
    )  # fmt: skip
    x, _ = sf.read(str(paths[2]))
    y, _ = sf.read(str(again[0]))
    assert abs(x - y).max() <= 2 / 32768  # equal up to float noise and 16-bit rounding
