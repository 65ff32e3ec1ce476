"""The ``multidiff`` command (run as ``python -m multidiff``): help, train / generate audio, video and image,
errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
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
    for argv, flag in (
        (["train", "audio", "--help"], "--data"),
        (["generate", "audio", "--help"], "--ckpt"),
        (["train", "video", "--help"], "--frames"),
        (["generate", "video", "--help"], "--first-frame"),
        (["train", "image", "--help"], "--vae"),
        (["generate", "image", "--help"], "--init"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0 and flag in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["train", "smell", "--data", "x"])
    assert (
        exit_.value.code == 2
        and "cannot train 'smell'; available: audio, image, video" in capsys.readouterr().err
    )


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
    half = tmp_path / "wavs-bf16"  # the network in bf16 weights
    assert main(["generate", "audio", "--ckpt", str(run), "--num", "1", "--seconds", "1", "--seed", "3",
                 "--dtype", "bf16", "--out", str(half), "--quiet"]) == 0  # fmt: skip
    audio, rate = sf.read(str(half / "sample-000-seed3.wav"))
    assert rate == 16000 and audio.shape == (16000,) and np.isfinite(audio).all()
    fast = tmp_path / "wavs-compiled"  # the network compiled (parity: test_generate_compile_...)
    assert main(["generate", "audio", "--ckpt", str(run), "--num", "1", "--seconds", "1", "--seed", "3",
                 "--compile", "--out", str(fast), "--quiet"]) == 0  # fmt: skip
    audio, rate = sf.read(str(fast / "sample-000-seed3.wav"))
    assert rate == 16000 and audio.shape == (16000,) and np.isfinite(audio).all()
    assert main(["generate", "audio", "--ckpt", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "holds no pipeline" in capsys.readouterr().err


def test_train_and_generate_video_on_a_new_folder(tmp_path, capsys) -> None:
    # A folder no other test uses: gifs of a bar sliding right or down, in two label folders.
    from multidiff.io import write_video

    data = tmp_path / "bars"
    for cls in ("right", "down"):
        (data / cls).mkdir(parents=True)
        for k in range(2):
            v = np.zeros((8, 16, 16, 3), np.uint8)
            for f in range(8):
                if cls == "right":
                    v[f, 4 + k : 10 + k, f : f + 3] = (255, 60 * k, 0)
                else:
                    v[f, f : f + 3, 4 + k : 10 + k] = (0, 60 * k, 255)
            write_video(data / cls / f"{cls}{k}.gif", v, fps=8)
    run = tmp_path / "run"
    multidiff("train", "video", "--data", str(data), "--out", str(run), "--steps", "2", "--batch", "2",
              "--frames", "4", "--size", "16", "--labels", "--sample-steps", "2")  # fmt: skip
    assert (run / "pipeline" / "config.json").is_file() and (run / "ckpt-00000002").is_dir()
    out = tmp_path / "videos"
    assert main(["generate", "video", "--ckpt", str(run), "--num", "2", "--frames", "6", "--label", "down",
                 "--guidance", "2", "--steps", "2", "--seed", "3", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    mp4s = sorted(out.glob("*.mp4"))
    assert [m.name for m in mp4s] == ["sample-000-seed3.mp4", "sample-001-seed4.mp4"]
    assert str(mp4s[0]) in capsys.readouterr().out
    for m in mp4s:
        assert iio.imread(m, index=None).shape == (6, 16, 16, 3)
    # image-to-video from a png: the first frame of the output is that image (up to H.264 coding).
    from multidiff.io import write_image

    first = np.zeros((16, 16, 3), np.uint8)
    first[2:8, 2:8] = 200
    write_image(tmp_path / "first.png", first)
    assert main(["generate", "video", "--ckpt", str(run), "--num", "1", "--first-frame", str(tmp_path / "first.png"),
                 "--steps", "2", "--seed", "0", "--gif", "--out", str(tmp_path / "i2v"), "--quiet"]) == 0  # fmt: skip
    (gif,) = sorted((tmp_path / "i2v").glob("*.gif"))
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 4 and np.array_equal(frames[0][..., :3], first)  # gif is lossless here
    assert main(["generate", "video", "--ckpt", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "holds no pipeline" in capsys.readouterr().err


def test_train_and_generate_image_via_cli(tmp_path) -> None:
    from multidiff.io import write_image

    data = tmp_path / "discs"
    data.mkdir()
    yy, xx = np.mgrid[:16, :16]
    for k in range(4):
        img = np.zeros((16, 16, 3), np.uint8)
        img[(yy - 4 - 2 * k) ** 2 + (xx - 8) ** 2 < 12] = (40 * k, 200, 90)
        write_image(data / f"disc{k}.png", img)
    run = tmp_path / "run"
    assert main(["train", "image", "--data", str(data), "--out", str(run), "--steps", "2", "--batch", "2",
                 "--size", "16", "--sample-steps", "2", "--threads", "1"]) == 0  # fmt: skip
    out = tmp_path / "pngs"
    assert main(["generate", "image", "--ckpt", str(run), "--num", "2", "--steps", "2", "--seed", "0",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(iio.imread(p).shape == (16, 16, 3) for p in pngs)


@pytest.mark.slow
def test_demo_audio(tmp_path) -> None:
    multidiff("demo", "audio", "--out", str(tmp_path), "--steps", "3")
    for label in ("low", "high", "chirp"):
        wavs = sorted((tmp_path / "samples" / label).glob("*.wav"))
        assert len(wavs) == 2 and sf.info(str(wavs[0])).frames == 16000


def test_generate_compile_compiles_the_backbone_and_samples_as_eager(tmp_path) -> None:
    """--compile: the loaded pipeline's backbone is compiled in place (its own Module.compile), and its
    latents equal the eager pipeline's to float32 rounding."""
    import argparse

    import torch
    from test_pipeline import tiny_audio_pipeline

    from multidiff.generation import load_for_generation
    from multidiff.pipeline import AudioPipeline

    folder = tiny_audio_pipeline(num_classes=2).save_pretrained(tmp_path / "pipe")
    loaded = []
    for compile in (False, True):
        args = argparse.Namespace(threads=None, num=1, batch=1, device="cpu", ckpt=str(folder), model=None,
                                  dtype=None, compile=compile, seed=0, steps=None, sampler=None, label=None,
                                  guidance=None)  # fmt: skip
        loaded.append(load_for_generation(args, AudioPipeline).pipe)
    eager, compiled = loaded
    assert compiled.backbone._compiled_call_impl is not None and eager.backbone._compiled_call_impl is None
    shape = eager.adapter.latent_shape(0.25)
    kw = dict(seed=1, label=1, steps=3, progress=False)
    torch.testing.assert_close(
        compiled.sample(1, shape, **kw), eager.sample(1, shape, **kw), rtol=1e-4, atol=1e-4
    )


def test_a_failing_torch_compile_is_one_line_and_exit_1(capsys) -> None:
    """An error raised by torch.compile's machinery is one line naming its cause and how to turn compiling
    off (generate: no --compile; train: --no-compile), exit 1; --debug shows the traceback; other errors
    are not swallowed."""
    from torch._dynamo.exc import BackendCompilerFailed

    from multidiff.cli import run_recipe

    def fails(argv):
        raise BackendCompilerFailed(
            lambda *a: None, RuntimeError("CppCompileError: no C++ compiler\nmore"), None
        )

    for what, off in (("generate audio", "no --compile"), ("train video", "--no-compile")):
        assert run_recipe(fails, [], what) == 1
        err = capsys.readouterr().err
        assert err == (
            f"multidiff: error: {what}: torch.compile failed (RuntimeError: CppCompileError: no C++ "
            "compiler); "
            f"run with {off}, or add --debug for the traceback\n"
        )
    with pytest.raises(BackendCompilerFailed):
        run_recipe(fails, ["--debug"], "generate audio")

    def bug(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_recipe(bug, [], "generate audio")
