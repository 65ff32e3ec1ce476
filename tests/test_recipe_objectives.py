"""Backbone and objective are choices of every train recipe: the tiny DiT with the flow objective trains end
to end through the ``multidiff`` command for audio and video (and the U-Net with v-prediction for images),
its pipeline saves and reloads with that parametrisation, and generation runs from the run folder. The
recipes are installed with the package: the wheel holds ``multidiff/recipes``."""

from __future__ import annotations

import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from multidiff import train
from multidiff.cli import main as cli
from multidiff.core.schedules import EDMSchedule, FlowSchedule, VPSchedule
from multidiff.io import write_audio, write_image, write_video
from multidiff.nn.dit import DiT
from multidiff.nn.unet import UNet
from multidiff.pipeline import AudioPipeline, ImagePipeline, VideoPipeline

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _audio_folder(root: Path) -> Path:
    t = torch.arange(8000, dtype=torch.float64) / 8000
    for cls, f in (("low", 200.0), ("high", 900.0)):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            write_audio(
                root / cls / f"{k}.wav", (0.3 * torch.sin(2 * math.pi * f * (1 + k / 10) * t)).float(), 16000
            )
    return root


def _video_folder(root: Path) -> Path:
    for cls, shade in (("dark", 60), ("light", 200)):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            clip = np.zeros((6, 16, 16, 3), np.uint8)
            for t in range(6):
                clip[t, 4:10, t + k : t + k + 6] = shade
            write_video(root / cls / f"{k}.gif", clip, 8)
    return root


def _image_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(4):
        write_image(root / f"{k}.png", rng.integers(0, 256, (16, 16, 3), np.uint8))
    return root


CASES = {
    "audio-dit-flow": ("audio", "dit", "flow", ["--seconds", "0.5", "--labels"], ["--seconds", "0.5"]),
    "video-dit-flow": (
        "video",
        "dit",
        "flow",
        ["--frames", "4", "--size", "16", "--labels"],
        ["--frames", "4"],
    ),
    "image-unet-v": ("image", "unet", "v", ["--size", "16"], []),
}
FOLDERS = {"audio": _audio_folder, "video": _video_folder, "image": _image_folder}
PIPES = {"audio": AudioPipeline, "video": VideoPipeline, "image": ImagePipeline}
SCHEDULES = {"flow": FlowSchedule, "v": VPSchedule, "edm": EDMSchedule}


@pytest.mark.parametrize("case", sorted(CASES))
def test_backbone_and_objective_train_and_generate_through_the_cli(case: str, tmp_path: Path) -> None:
    modality, backbone, objective, train_extra, gen_extra = CASES[case]
    data = FOLDERS[modality](tmp_path / "data")
    run, out = tmp_path / "run", tmp_path / "gen"
    rc = cli(
        ["train", modality, "--data", str(data), "--out", str(run), "--preset", "tiny", "--backbone", backbone,
         "--objective", objective, "--steps", "3", "--batch", "2", "--preview-every", "0", "--sample-steps", "2",
         "--device", "cpu", *train_extra]
    )  # fmt: skip
    assert rc == 0
    assert train.latest_checkpoint(run).step == 3
    pipe = PIPES[modality].from_pretrained(run / "pipeline")
    assert isinstance(pipe.denoiser.backbone, DiT if backbone == "dit" else UNet)
    assert pipe.denoiser.prediction == objective and isinstance(pipe.denoiser.schedule, SCHEDULES[objective])
    rc = cli(
        [
            "generate",
            modality,
            "--ckpt",
            str(run),
            "--num",
            "2",
            "--steps",
            "2",
            "--out",
            str(out),
            *gen_extra,
        ]
    )
    assert rc == 0
    assert len([p for p in out.iterdir() if p.is_file()]) >= 2


def test_objective_options_are_checked_before_training(tmp_path: Path, capsys) -> None:
    data = _audio_folder(tmp_path / "data")
    with pytest.raises(SystemExit) as err:
        cli(["train", "audio", "--data", str(data), "--out", str(tmp_path / "r"), "--objective", "v",
             "--p-mean", "0.3", "--device", "cpu"])  # fmt: skip
    assert err.value.code == 2 and "--p-mean" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_wheel_carries_the_recipes(tmp_path: Path) -> None:
    """A (non-editable) wheel of the project holds the recipes as ``multidiff/recipes``, so ``multidiff
    train ...`` works after ``pip install .`` from any folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("multidiff-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (
        "train_audio",
        "train_video",
        "train_image",
        "generate_audio",
        "generate_video",
        "data/make_speech",
    ):
        assert f"multidiff/recipes/{recipe}.py" in names
