"""The tiny video recipe end to end on moving-square clips made here: train, checkpoint, gif previews,
exact resume, generate mp4s (longer than the training clips) readable by imageio, and known frames
(continuation, interpolation, image-to-video) reproduced exactly in the output."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from multidiff import train
from multidiff.cli import load_recipe
from multidiff.io import write_video
from multidiff.pipeline import VideoPipeline

torch.set_num_threads(1)

SIZE, FRAMES = 16, 4


def moving_squares(root: Path, n: int = 4, frames: int = 10, size: int = SIZE, seed: int = 0) -> Path:
    """``n`` clips of a coloured 5 x 5 square bouncing around a black frame."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for k in range(n):
        v = np.zeros((frames, size, size, 3), np.uint8)
        x, y = (int(t) for t in rng.integers(0, size - 5, 2))
        dx, dy = (int(t) for t in rng.choice([-1, 1], 2))
        color = rng.integers(100, 256, 3).astype(np.uint8)
        for f in range(frames):
            v[f, y : y + 5, x : x + 5] = color
            dx = -dx if not 0 <= x + dx <= size - 5 else dx
            dy = -dy if not 0 <= y + dy <= size - 5 else dy
            x, y = x + dx, y + dy
        write_video(root / f"clip{k}.mp4", v, fps=8)
    return root


def common_args(data: Path, out: Path, steps: int) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", str(steps), "--batch", "2",
        "--frames", str(FRAMES), "--size", str(SIZE), "--ckpt-every", "2", "--preview-every", "2",
        "--preview-num", "1", "--sample-steps", "2", "--log-every", "1", "--device", "cpu",
    ]  # fmt: skip


def test_tiny_video_recipe_trains_resumes_and_generates(tmp_path, capsys) -> None:
    trainer = load_recipe("train_video.py")
    data = moving_squares(tmp_path / "data")

    trainer.main(common_args(data, tmp_path / "full", 4))  # uninterrupted
    trainer.main(common_args(data, tmp_path / "run", 2))  # stopped at a checkpoint ...
    assert train.latest_checkpoint(tmp_path / "run").step == 2
    trainer.main(common_args(data, tmp_path / "run", 4))  # ... and resumed
    assert "resuming from" in capsys.readouterr().out

    a, b = train.latest_checkpoint(tmp_path / "full"), train.latest_checkpoint(tmp_path / "run")
    assert a.step == b.step == 4 and a.state["data"] == b.state["data"]
    for name in ("model", "ema", "optimizer"):
        ta, tb = a.tensors(name), b.tensors(name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    for step in (2, 4):
        gif = tmp_path / "run" / "previews" / f"step-{step:08d}" / "sample-0.gif"
        assert iio.imread(gif, index=None).shape == (FRAMES, SIZE, SIZE, 3)
    with pytest.raises(train.ResumeConfigError, match=r"frames: 4 in the checkpoint, 6 now"):
        trainer.main([*common_args(data, tmp_path / "run", 6), "--frames", "6"])
    caches = sorted(p.name for p in (tmp_path / "run").rglob("*") if "cache" in str(p))
    (tmp_path / "nodata").mkdir()  # refused on the setting before any data is read (the cache stays as it was)
    with pytest.raises(train.ResumeConfigError, match=r"frames: 4 in the checkpoint, 6 now") as err:
        trainer.main([*common_args(tmp_path / "nodata", tmp_path / "run", 6), "--frames", "6"])
    assert "\n" not in str(err.value)  # one line
    assert sorted(p.name for p in (tmp_path / "run").rglob("*") if "cache" in str(p)) == caches

    # The saved pipeline: EMA weights, training length and size, frame-mask conditioning.
    pipe = VideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.window == FRAMES and pipe.size == (SIZE, SIZE) and pipe.frame_conditioned
    assert pipe.backbone.config.cond_channels == 4  # RGB latents + the mask
    ema = b.tensors("ema")
    assert all(torch.equal(v, ema[k]) for k, v in pipe.denoiser.state_dict().items())

    # mp4s of 6 frames (longer than the 4-frame training clips: overlapping windows).
    gen = load_recipe("generate_video.py")
    paths = gen.main(
        ["--ckpt", str(tmp_path / "run"), "--num", "3", "--batch", "2", "--frames", "6", "--steps", "3",
         "--seed", "4", "--out", str(tmp_path / "gen"), "--quiet"]
    )  # fmt: skip
    assert [p.name for p in paths] == ["sample-000-seed4.mp4", "sample-001-seed5.mp4", "sample-002-seed6.mp4"]
    for p in paths:
        assert iio.imread(p, index=None).shape == (6, SIZE, SIZE, 3)

    # Known frames come back exactly (pixel space: x0 pinned by inpaint, uint8 round trip is exact).
    clip = torch.from_numpy(np.stack([np.full((SIZE, SIZE, 3), 40 * k + 10, np.uint8) for k in range(3)]))
    out = pipe.continue_video(clip, 7, seed=0, steps=3, progress=False)  # continuation, windowed
    assert out.shape == (1, 7, SIZE, SIZE, 3) and out.dtype == torch.uint8
    assert torch.equal(out[0, :3], clip)
    first, last = clip[0], clip[2]
    tween = pipe.interpolate(first, last, 5, seed=0, steps=3, progress=False)
    assert torch.equal(tween[0, 0], first) and torch.equal(tween[0, -1], last)
    i2v = pipe.image_to_video(torch.stack([first, last]), FRAMES, seed=0, steps=3, progress=False)
    assert i2v.shape == (2, FRAMES, SIZE, SIZE, 3)
    assert torch.equal(i2v[0, 0], first) and torch.equal(i2v[1, 0], last)
    # Conditioning through the channels alone still runs and changes the result (the model sees the frames).
    soft = pipe.continue_video(clip, 7, seed=0, steps=3, progress=False, replace_known=False)
    plain = pipe.generate(1, 7, seed=0, steps=3, progress=False)
    assert soft.shape == plain.shape and not torch.equal(soft, plain)
    # Video k depends only on its seed.
    one = pipe.generate(1, 6, seed=6, steps=3, progress=False)
    two = pipe.generate(3, 6, seed=4, steps=3, progress=False)
    assert torch.equal(one[0], two[2])


def tiny_vae_folder(path: Path) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=16,
    ).save_pretrained(path)  # fmt: skip
    return path


def test_vae_latents_with_images_as_one_frame_clips(tmp_path, capsys) -> None:
    """--vae: cached per-frame latents and fitted statistics; --images: every 2nd step is a batch of
    one-frame clips; both data streams resume exactly; the pipeline folder carries the VAE."""
    from multidiff.io import write_image

    trainer = load_recipe("train_video.py")
    data = moving_squares(tmp_path / "data", n=3, seed=1)
    stills = tmp_path / "stills"
    stills.mkdir()
    for k in range(3):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[3 * k : 3 * k + 6, 4:10] = (250, 200, 50 * k)
        write_image(stills / f"still{k}.png", img)
    vae = tiny_vae_folder(tmp_path / "vae")

    def args(out: str, steps: int) -> list[str]:
        a = common_args(data, tmp_path / out, steps)
        return [*a, "--vae", str(vae), "--images", str(stills), "--image-every", "2", "--preview-every", "0"]

    trainer.main(args("full", 4))
    trainer.main(args("run", 2))
    trainer.main(args("run", 4))
    assert "resuming from" in capsys.readouterr().out
    a, b = train.latest_checkpoint(tmp_path / "full"), train.latest_checkpoint(tmp_path / "run")
    # 4 steps = 2 video + 2 image batches of 2, over 3 files each
    assert (
        a.state["data"]
        == b.state["data"]
        == {"video": {"epoch": 1, "index": 1}, "images": {"epoch": 1, "index": 1}}
    )
    for name in ("model", "ema", "optimizer"):
        ta, tb = a.tensors(name), b.tensors(name)
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    cached = list((tmp_path / "run" / "latent-cache").rglob("*.safetensors"))
    assert len(cached) == 6  # 3 videos + 3 images, encoded once

    pipe = VideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert (tmp_path / "run" / "pipeline" / "vae").is_dir() and bool(pipe.adapter.image.fitted)
    assert pipe.adapter.latent_channels == 4 and pipe.backbone.config.cond_channels == 5
    videos = pipe.generate(2, 5, seed=0, steps=2, progress=False, decode_chunk=3)
    assert videos.shape == (2, 5, SIZE, SIZE, 3) and videos.dtype == torch.uint8
