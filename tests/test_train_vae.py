"""recipes/train_vae.py: a few steps on synthetic images and a clip, exact resume, reload through ImageAdapter."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multidiff.io import write_image, write_video
from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
from multidiff.train.checkpoint import latest_checkpoint, list_checkpoints

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train_vae.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("train_vae_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vae_data")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 20)
    for i in range(6):  # gradients with a coloured square, 20x20 (random 16x16 crops)
        img = np.zeros((20, 20, 3), np.uint8)
        img[..., i % 3] = ramp[None, :] if i % 2 else ramp[:, None]
        y, x = rng.integers(0, 12, 2)
        img[y : y + 8, x : x + 8] = rng.integers(0, 256, 3)
        write_image(root / f"img{i}.png", img)
    clip = np.zeros((5, 16, 16, 3), np.uint8)
    for t in range(5):
        clip[t, 4:10, 2 * t : 2 * t + 6] = (220, 60, 30)
    write_video(root / "clip.mp4", clip, 10)  # video frames train the same VAE
    return root


ARGS = ["--size", "16", "--batch", "3", "--preset", "micro", "--lr", "2e-3", "--log-every", "100"]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, dict]:
    """Three steps in one go."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    return out, load_recipe().main(["--data", str(data), "--out", str(out), "--steps", "3", *ARGS])


def test_train_save_reload(trained) -> None:
    out, result = trained
    assert result["step"] == 3 and len(result["log"]) == 3
    assert all(np.isfinite(r["rec"]) and r["kl"] >= 0 for r in result["log"])
    names = {p.name for p in out.iterdir()}
    # The run folder of every trainer (numbered checkpoints, latest, log), with the newest VAE at OUT itself.
    assert {
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "latest",
        "log.jsonl",
        "ckpt-00000003",
    } <= names
    assert not any(n.startswith(".tmp") for n in names) and "lock" not in names  # nothing half-written left
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.step == 3 and ckpt.state["config"]["preset"] == "micro"
    assert {"model", "optimizer", "rng"} <= {p.stem for p in ckpt.path.glob("*.safetensors")}
    assert (ckpt.path / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        out / "diffusion_pytorch_model.safetensors"
    ).read_bytes()
    adapter = ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(out), sigma_data=1.0))
    assert adapter.latent_shape(16, 16) == (4, 4, 4)
    x = torch.from_numpy(np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 128, 255)]))
    adapter.fit_stats([x])
    z = adapter.encode(x)
    assert z.shape == (3, 4, 4, 4)
    assert torch.allclose(z.transpose(0, 1).reshape(4, -1).std(1), torch.ones(4), atol=1e-3)
    assert adapter.decode(z).shape == (3, 16, 16, 3)


def test_resume_is_exact(data, trained, tmp_path) -> None:
    from safetensors.torch import load_file

    recipe = load_recipe()
    straight, _ = trained
    resumed = tmp_path / "resumed"
    recipe.main(["--data", str(data), "--out", str(resumed), "--steps", "1", *ARGS])
    result = recipe.main(["--data", str(data), "--out", str(resumed), "--steps", "3", *ARGS])
    assert result["step"] == 3 and [r["step"] for r in result["log"]] == [1, 2, 3]
    assert [c.step for c in list_checkpoints(resumed)] == [1, 3]
    a = load_file(str(straight / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("model", "optimizer"):  # weights and optimiser state, bit for bit
        a = load_file(str(straight / "ckpt-00000003" / f"{name}.safetensors"))
        b = load_file(str(resumed / "ckpt-00000003" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # a finished run is not trained further; a rerun publishes its newest result again (here: a process killed
    # while copying it, which left the folder without its config and with a stray temporary copy)
    (resumed / "config.json").unlink()
    (resumed / ".tmp-config.json.deadbeef").write_text("{}")
    assert recipe.main(["--data", str(data), "--out", str(resumed), "--steps", "2", *ARGS])["step"] == 3
    assert (resumed / "config.json").is_file() and not list(resumed.glob(".tmp-*.*"))
    ImageAdapter(ImageAdapterConfig(space="vae", vae_path=str(resumed)))  # loads as a VAE again
    # resuming with a setting that changes the training is refused, naming it
    with pytest.raises(ValueError, match="kl_weight"):
        recipe.main(["--data", str(data), "--out", str(resumed), "--steps", "4", *ARGS, "--kl-weight", "1"])


def test_old_run_folder_is_refused_with_what_to_do(data, trained, tmp_path) -> None:
    """A VAE folder of the former format (weights at OUT, train_state.json/.safetensors beside them) is not
    resumed: one line says to use a new --out or --no-resume; --no-resume then starts over in it."""
    import shutil

    recipe = load_recipe()
    straight, _ = trained
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        shutil.copy(straight / name, old / name)
    (old / "train_state.json").write_text(json.dumps({"step": 3, "optimizer": {}, "args": {}, "log": []}))
    (old / "train_state.safetensors").write_bytes(b"")
    argv = ["--data", str(data), "--out", str(old), "--steps", "3", *ARGS]
    with pytest.raises(ValueError) as err:
        recipe.main(argv)
    message = str(err.value)
    assert "\n" not in message and "older multidiff" in message
    assert "new --out" in message and "--no-resume" in message
    assert not (old / "lock").exists() and not list(old.glob("ckpt-*"))  # nothing written
    result = recipe.main([*argv, "--no-resume"])
    assert result["step"] == 3 and not (old / "train_state.json").exists()
    from safetensors.torch import load_file

    a = load_file(str(straight / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(old / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # started over: the same run as a fresh folder


def test_bad_arguments(data, tmp_path) -> None:
    recipe = load_recipe()
    with pytest.raises(SystemExit):
        recipe.parse_args(["--data", str(data), "--out", str(tmp_path), "--size", "18", "--preset", "micro"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        recipe.main(["--data", str(empty), "--out", str(tmp_path / "o"), "--steps", "1", *ARGS])
    assert not (tmp_path / "o" / "run.json").exists()  # no run marked for data that was never read
    # images beside a hidden video (a killed write's leftover) are images only, as the folders see them
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    for f in sorted(data.glob("img*.png")):
        shutil.copy(f, images / f.name)
    shutil.copy(data / "clip.mp4", images / ".tmp-clip.0123456789ab.mp4")
    assert len(recipe.build_dataset(images, 16, 0)) == 6


def test_ctrl_c_saves_the_step_and_a_second_run_in_the_folder_is_refused(data, tmp_path) -> None:
    """The VAE trainer shares the run-folder rules of the diffusion recipes: SIGINT finishes the step, saves,
    exits 130 without a traceback; a live lock refuses a second process."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    out = tmp_path / "vae"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "train_vae.py"
    cmd = [sys.executable, str(recipe), "--data", str(data), "--out", str(out), "--steps", "100000",
           "--save-every", "100000", *[a if a != "100" else "1" for a in ARGS]]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})  # fmt: skip
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("step 2/"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "checkpoint written to" in err, err
    assert latest_checkpoint(out).step >= 2  # saved on the signal
    assert not (out / "lock").exists()
    (out / "lock").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"})
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is in use" in proc.stderr and "Traceback" not in proc.stderr
