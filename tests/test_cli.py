"""The ``multidiff`` command (run as ``python -m multidiff``): help, train audio, generate audio, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from multidiff.cli import main, synth_tone_folder

ROOT = Path(__file__).resolve().parents[1]


def multidiff(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "multidiff", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"multidiff {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def test_help_lists_the_commands(capsys) -> None:
    out = multidiff("--help").stdout  # the installed entry point's code path, in a fresh interpreter
    for word in ("train", "generate", "demo"):
        assert word in out
    for argv, flag in ((["train", "audio", "--help"], "--data"), (["generate", "audio", "--help"], "--ckpt")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0 and flag in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["train", "smell", "--data", "x"])
    assert exit_.value.code == 2 and "cannot train 'smell'; available: audio" in capsys.readouterr().err


def test_train_and_generate_audio_on_a_new_folder(tmp_path, capsys) -> None:
    # A folder no other test uses: three classes of synthetic sounds at 16 kHz, 1.5 s each.
    data = synth_tone_folder(tmp_path / "sounds", per_class=2, sample_rate=16000, seconds=1.5, seed=11)
    run = tmp_path / "run"
    train_args = ["train", "audio", "--data", str(data), "--out", str(run), "--preset", "tiny", "--steps", "2",
                  "--batch", "3", "--seconds", "0.5", "--labels", "--sample-steps", "2"]  # fmt: skip
    multidiff(*train_args)
    assert (run / "pipeline" / "config.json").is_file() and (run / "ckpt-00000002").is_dir()
    # Rerunning the finished command resumes at step 2 and does nothing more.
    assert main([*train_args, "--threads", "1"]) == 0
    assert "resuming from" in capsys.readouterr().out
    out = tmp_path / "wavs"
    assert main(["generate", "audio", "--ckpt", str(run), "--num", "2", "--seconds", "1", "--label", "chirp",
                 "--seed", "3", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == ["sample-000-seed3.wav", "sample-001-seed4.wav"]
    assert str(wavs[0]) in capsys.readouterr().out
    for w in wavs:
        info = sf.info(str(w))
        assert info.samplerate == 16000 and info.frames == 16000
    with pytest.raises(SystemExit, match="holds no pipeline"):
        main(["generate", "audio", "--ckpt", str(tmp_path / "nothing"), "--out", str(out)])


@pytest.mark.slow
def test_demo_audio(tmp_path) -> None:
    multidiff("demo", "audio", "--out", str(tmp_path), "--steps", "3")
    for label in ("low", "high", "chirp"):
        wavs = sorted((tmp_path / "samples" / label).glob("*.wav"))
        assert len(wavs) == 2 and sf.info(str(wavs[0])).frames == 24000
