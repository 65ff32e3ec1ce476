"""Nonsense settings are refused before any work starts (issue 11, item 5): through the ``multidiff`` command,
each case exits 2 with one line ``multidiff: error: ...`` naming the option, no traceback, and writes no
checkpoint."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from multidiff import train
from multidiff.cli import main as cli
from multidiff.io import write_audio

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    t = torch.arange(8000, dtype=torch.float64) / 16000
    (root / "data").mkdir()
    for k in range(2):
        write_audio(
            root / "data" / f"{k}.wav", (0.3 * torch.sin(2 * math.pi * 300 * (k + 1) * t)).float(), 16000
        )
    run = root / "uncond"
    base = [
        "--data",
        str(root / "data"),
        "--preset",
        "tiny",
        "--batch",
        "2",
        "--seconds",
        "0.25",
        "--device",
        "cpu",
    ]
    assert cli(["train", "audio", *base, "--out", str(run), "--steps", "1"]) == 0
    return {"data": root / "data", "uncond": run, "root": root}


TRAIN_CASES = {
    "--keep 0": ["--keep", "0"],
    "--ckpt-every 0": ["--ckpt-every", "0"],
    "--log-every 0": ["--log-every", "0"],
    "--accum 0": ["--accum", "0"],
    "--steps 0": ["--steps", "0"],
    "--steps -1": ["--steps", "-1"],
    "--warmup -5": ["--warmup", "-5"],
    "--threads 0": ["--threads", "0"],
    "--lr 0": ["--lr", "0"],
    "--ema-decay 1": ["--ema-decay", "1"],
    "--label-dropout 1": ["--label-dropout", "1"],
    "--seconds 0": ["--seconds", "0"],
    "--batch 3 --accum 2": ["--batch", "3", "--accum", "2"],
    "--fp8 on the U-Net": ["--fp8", "tensorwise"],
    "--fp8 on the CPU": ["--fp8", "rowwise", "--backbone", "dit"],
    "--seed -5": ["--seed", "-5"],
    "--device tpu": ["--device", "tpu"],
    "--sampler bogus": ["--sampler", "bogus"],
    "--p-mean nan": ["--p-mean", "nan"],
    "--lora without --init": ["--lora", "4"],
    "--lora 0": ["--lora", "0", "--init", "{uncond}"],
    "--lora-alpha -1": ["--lora", "2", "--lora-alpha", "-1", "--init", "{uncond}"],
    "--init missing": ["--init", "{root}/nothing-here"],
    "--seconds 0.01 (shorter than a mel frame)": ["--seconds", "0.01"],
    "--seconds 1e5 (a batch over half the memory)": ["--seconds", "1e5"],
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_train_settings_are_one_line_errors(case: str, folders, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    extra = [a.format(**{k: str(v) for k, v in folders.items()}) for a in TRAIN_CASES[case]]
    argv = ["train", "audio", "--data", str(folders["data"]), "--out", str(run), "--preset", "tiny",
            "--device", "cpu", "--batch", "2", *extra]  # fmt: skip
    if case == "--device tpu":
        argv.remove("cpu"), argv.remove("--device")  # the case's own --device
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    option = case.split()[0] if case != "--batch 3 --accum 2" else "--batch"
    assert err.startswith("multidiff: error:") and option in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and not run.exists()  # refused before the run folder is made


GENERATE_CASES = {
    "guidance on an unconditional model": (["--guidance", "3"], "guidance needs a class-conditional"),
    "a length that would need terabytes": (["--seconds", "1e9"], "GiB"),
    "--device tpu": (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
    "--threads -1": (["--threads", "-1"], "--threads must be > 0"),
    "a clip shorter than a mel frame": (["--seconds", "0.005"], "samples are too few for these mel settings"),
    "--strength without --init": (["--strength", "0.3"], "--strength applies to audio-to-audio"),
    "--continue to a length the clip already has": (["--continue", "{clip}", "--seconds", "0.25"],
                                                    "is already 0.50 s long"),
    "--seed -5": (["--seed", "-5"], "--seed must lie in [0, 2^63 - --num], got -5"),
    "--sampler nope": (["--sampler", "nope"], "unknown sampler 'nope'"),
    "--steps 0": (["--steps", "0"], "--steps must be > 0, got 0"),
    "--label on a model without labels": (["--label", "dog"], "trained without class labels"),
}
#: refused before the command prints or writes anything (the others after it says what it will make)
GENERATE_EARLY = {"--seed -5", "--sampler nope", "--steps 0", "--label on a model without labels",
                  "guidance on an unconditional model", "--device tpu", "--threads -1", "--strength without --init",
                  "a length that would need terabytes", "a clip shorter than a mel frame"}


@pytest.mark.parametrize("modality", ["video", "image"])
def test_a_frame_size_needing_terabytes_is_refused_before_the_data(modality, folders, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", modality, "--data", str(folders["data"]), "--out", str(run), "--preset", "tiny",
            "--size", "100000"]  # fmt: skip
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("multidiff: error:") and "--size 100000" in err and "GiB" in err, err
    assert len(err.splitlines()) == 1 and not run.exists()


@pytest.mark.parametrize("case", sorted(GENERATE_CASES))
def test_bad_generate_settings_are_one_line_errors(case: str, folders, tmp_path: Path, capsys) -> None:
    extra, words = GENERATE_CASES[case]
    clip = tmp_path / "clip.wav"
    write_audio(clip, torch.zeros(4000), 8000)  # 0.5 s
    extra = [a.format(clip=clip) for a in extra]
    out = tmp_path / "gen"
    steps = [] if "--steps" in extra else ["--steps", "2"]
    assert cli(["generate", "audio", "--ckpt", str(folders["uncond"]), "--num", "1", *steps,
                "--out", str(out), "--quiet", *extra]) == 2  # fmt: skip
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("multidiff: error:") and words in err and len(err.splitlines()) == 1, err
    assert not any(out.glob("*.wav"))
    if case in GENERATE_EARLY:
        assert captured.out == "" and not out.exists()


def test_out_must_be_new_empty_or_a_run_of_the_same_recipe(folders, tmp_path: Path, capsys) -> None:
    """``--out``: a folder of the user's files, a run of another recipe and a file are refused before any work,
    each file left as it was; a run of the same recipe resumes."""
    base = ["--data", str(folders["data"]), "--preset", "tiny", "--device", "cpu", "--batch", "2",
            "--seconds", "0.25", "--steps", "1"]  # fmt: skip
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "log.jsonl").write_text("my notes\n")
    (mine / "notes.txt").write_text("keep\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    video = ["--data", str(folders["data"]), "--preset", "tiny", "--device", "cpu"]
    cases = [(["train", "audio", "--out", str(mine), *base], "not a multidiff run's (notes.txt)"),
             (["train", "video", "--out", str(folders["uncond"]), *video], "is a run of `multidiff train audio`"),
             (["train", "audio", "--out", str(afile), *base], "is a file")]  # fmt: skip
    for argv, words in cases:
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("multidiff: error:") and words in err and len(err.splitlines()) == 1, err
    assert (mine / "log.jsonl").read_text() == "my notes\n" and sorted(p.name for p in mine.iterdir()) == [
        "log.jsonl", "notes.txt"]  # fmt: skip
    assert afile.read_text() == "x" and train.latest_checkpoint(folders["uncond"]).step == 1
    assert cli(["train", "audio", "--out", str(folders["uncond"]), *base[:-1], "2"]) == 0  # resumes to step 2
    assert train.latest_checkpoint(folders["uncond"]).step == 2
    # a run from before run.json (unmarked), with a viewer's dotfile and the user's samples beside it, resumes
    (folders["uncond"] / train.RUN_MARKER).unlink()
    (folders["uncond"] / ".DS_Store").write_bytes(b"")
    (folders["uncond"] / "samples").mkdir()
    assert cli(["train", "audio", "--out", str(folders["uncond"]), *base[:-1], "3"]) == 0
    assert train.latest_checkpoint(folders["uncond"]).step == 3


def test_a_diverging_run_ends_with_one_line_and_exit_1(folders, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "audio", "--data", str(folders["data"]), "--out", str(run), "--preset", "tiny",
            "--device", "cpu", "--batch", "2", "--seconds", "0.25", "--steps", "5", "--lr", "1e30",
            "--warmup", "0", "--grad-clip", "0", "--max-nonfinite", "2", "--no-compile"]  # fmt: skip
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # after the progress bar's lines
    assert last.startswith("multidiff: error: train audio: the loss or gradient was not finite"), err
    assert "lower the learning rate" in last and "Traceback" not in err


def test_unknown_options_and_direct_recipe_runs_are_one_line_errors(folders, tmp_path: Path, capsys) -> None:
    """argparse's own errors and a recipe run as a script (``python recipes/train_audio.py``) follow the
    same rule: one line, exit 2."""
    import subprocess
    import sys

    with pytest.raises(SystemExit) as err:
        cli(["train", "audio", "--data", str(folders["data"]), "--out", str(tmp_path / "r"), "--frobnicate"])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("multidiff: error: multidiff train audio:")
        and "--frobnicate" in lines[0]
    )
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "train_audio.py"
    proc = subprocess.run(
        [sys.executable, str(recipe), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("multidiff: error:") and "missing" in proc.stderr


CSV_FAULTS = {
    "an unclosed quote": 'path,label\n"0.wav,a\n1.wav,b\n',
    "extra fields": "path,label\n0.wav,a,b\n",
    "a path outside": "path,label\n../../etc/passwd,a\n",
    "undecodable": b"path,label\n0.wav,\xff\n",
    "a JSON list as a label": 'path,label\n0.wav,"[1, 2]"\n',
}


@pytest.mark.parametrize("case", sorted(CSV_FAULTS))
def test_malformed_metadata_through_the_command(case: str, folders, tmp_path: Path, capsys) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folders["data"], data)
    text = CSV_FAULTS[case]
    (data / "metadata.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
    rc = cli(["train", "audio", "--data", str(data), "--out", str(tmp_path / "r"), "--preset", "tiny",
              "--batch", "2", "--seconds", "0.25", "--device", "cpu", "--labels"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("multidiff: error:") and "metadata.csv, line" in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_unlisted_files_are_used_unlabelled_or_refused_when_labels_are_needed(
    folders, tmp_path, capsys
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folders["data"], data)
    (data / "metadata.csv").write_text("path,label\n0.wav,low\n")  # 1.wav is not listed
    base = ["train", "audio", "--data", str(data), "--preset", "tiny", "--batch", "2", "--seconds", "0.25",
            "--device", "cpu", "--steps", "1"]  # fmt: skip
    from multidiff.data.common import MetadataWarning

    with pytest.warns(MetadataWarning, match=r"not listed in metadata.csv \(1.wav\)"):
        assert cli([*base, "--out", str(tmp_path / "r1"), "--labels"]) == 2
    err = capsys.readouterr().err
    assert "--labels: 1 file(s)" in err and "1.wav" in err and "have no label" in err
    assert cli([*base, "--out", str(tmp_path / "r2")]) == 0  # unconditional: both files are used
    assert "2 audio file(s) used" in capsys.readouterr().out


def test_the_data_makers_never_write_into_a_folder_that_is_not_empty(tmp_path: Path, capsys) -> None:
    from multidiff.cli import load_recipe

    maker = load_recipe("data/make_digits_video.py")
    out = tmp_path / "clips"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="is not empty; give a new folder, or add --overwrite"):
        maker.main(["--out", str(out), "--num", "2", "--format", "gif", "--frames", "2"])
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert maker.main(["--out", str(out), "--num", "2", "--format", "gif", "--frames", "2", "--overwrite"]) == out
    with pytest.raises(SystemExit):
        maker.main(["--out", str(tmp_path / "new"), "--fps", "0"])
    err = capsys.readouterr().err.strip()
    assert err == "multidiff: error: make_digits_video: --fps must be > 0, got 0.0 (see make_digits_video --help)"
    speech = load_recipe("data/make_speech.py")
    with pytest.raises(ValueError, match="is not empty"):
        speech.main(["--out", str(out), "--words", "one", "--per-word", "1"])


def test_vae_demo_ui_and_launcher_settings_are_one_line_errors(folders, tmp_path: Path, capsys, monkeypatch) -> None:
    """train_vae never writes into another recipe's run (--no-resume deleted its checkpoints), the demo never
    into a folder of the user's files, ui checks its options, and a launcher rank outside the world is
    refused before joining a process group that would never form (it hung)."""
    from multidiff.cli import load_recipe
    from multidiff.io import write_image

    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        write_image(images / f"{k}.png", np.full((16, 16, 3), 60 * k, np.uint8))
    vae = load_recipe("train_vae.py")
    with pytest.raises(ValueError, match="is a run of `multidiff train audio`, not of `multidiff train vae`"):
        vae.main(["--data", str(images), "--out", str(folders["uncond"]), "--size", "16", "--preset", "micro",
                  "--steps", "1", "--no-resume"])  # fmt: skip
    assert train.latest_checkpoint(folders["uncond"]) is not None  # nothing deleted
    unmarked = tmp_path / "unmarked"  # a checkpoint but no run.json: --no-resume, which deletes, is refused
    shutil.copytree(folders["uncond"], unmarked)
    (unmarked / train.RUN_MARKER).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="is not marked as a train_vae run"):
        vae.main(["--data", str(images), "--out", str(unmarked), "--size", "16", "--preset", "micro",
                  "--steps", "1", "--no-resume"])  # fmt: skip
    assert train.latest_checkpoint(unmarked) is not None
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert cli(["demo", "image", "--out", str(mine), "--steps", "1"]) == 2
    assert "holds files that are not a demo's (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert cli(["ui", "--ckpt", str(folders["uncond"]), "--port", "99999"]) == 2
    assert "--port must lie in 0..65535" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    assert cli(["train", "audio", "--data", str(folders["data"]), "--out", str(tmp_path / "w"), "--preset", "tiny",
                "--device", "cpu", "--batch", "2", "--seconds", "0.25", "--steps", "1"]) == 2  # fmt: skip
    assert "RANK=5, LOCAL_RANK=5 and WORLD_SIZE=2 do not fit" in capsys.readouterr().err


@pytest.mark.parametrize("modality", ["video", "image"])
def test_generate_refuses_a_size_needing_terabytes_before_it_prints(modality, tmp_path: Path, capsys) -> None:
    if modality == "video":
        source = ["--model", "moving-digits"]
    else:  # a tiny pixel-space image model
        from multidiff.core.denoiser import Denoiser
        from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
        from multidiff.nn.unet import UNet, UNetConfig
        from multidiff.pipeline import ImagePipeline

        unet = UNet(UNetConfig(in_channels=3, channels=(8, 16), num_res_blocks=1, attention_levels=(), head_dim=8,
                               norm_groups=4, emb_dim=32, noise_freq_dim=16))  # fmt: skip
        pipe = ImagePipeline(Denoiser(unet, "edm", sigma_data=0.5), ImageAdapter(ImageAdapterConfig()), size=8)
        source = ["--ckpt", str(pipe.save_pretrained(tmp_path / "pipe"))]
    out = tmp_path / "gen"
    assert cli(["generate", modality, *source, "--num", "1", "--size", "100000", "--out", str(out), "--quiet",
                "--device", "cpu"]) == 2  # fmt: skip
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("multidiff: error:") and "GiB" in err and len(err.splitlines()) == 1, err
    assert captured.out == "" and not out.exists()
