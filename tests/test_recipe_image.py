"""The tiny image recipe end to end on square images made here: train, checkpoint, png previews, exact
resume, generate pngs, and inpainting that keeps the known pixels exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from multidiff import train
from multidiff.cli import load_recipe
from multidiff.io import read_image, write_image
from multidiff.pipeline import ImagePipeline

torch.set_num_threads(1)

SIZE = 16


def square_images(root: Path, n: int = 6, size: int = SIZE, seed: int = 0) -> Path:
    """``n`` images of a coloured square on black, in two label folders."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        x, y = (int(t) for t in rng.integers(0, size - 6, 2))
        img[y : y + 6, x : x + 6] = rng.integers(100, 256, 3).astype(np.uint8)
        cls = "a" if k % 2 else "b"
        (root / cls).mkdir(parents=True, exist_ok=True)
        write_image(root / cls / f"img{k}.png", img)
    return root


def common_args(data: Path, out: Path, steps: int) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", str(steps), "--batch", "2",
        "--size", str(SIZE), "--labels", "--ckpt-every", "2", "--preview-every", "2", "--preview-num", "1",
        "--sample-steps", "2", "--log-every", "1", "--device", "cpu",
    ]  # fmt: skip


def test_tiny_image_recipe_trains_resumes_and_generates(tmp_path) -> None:
    trainer = load_recipe("train_image.py")
    data = square_images(tmp_path / "data")
    trainer.main(common_args(data, tmp_path / "full", 4))
    trainer.main(common_args(data, tmp_path / "run", 2))
    trainer.main(common_args(data, tmp_path / "run", 4))
    a, b = train.latest_checkpoint(tmp_path / "full"), train.latest_checkpoint(tmp_path / "run")
    assert a.step == b.step == 4 and a.state["data"] == b.state["data"]
    for name in ("model", "ema", "optimizer"):
        ta, tb = a.tensors(name), b.tensors(name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert read_image(tmp_path / "run" / "previews" / "step-00000004" / "sample-0.png").shape == (
        SIZE,
        SIZE,
        3,
    )

    pipe = ImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.size == (SIZE, SIZE) and pipe.labels == ["a", "b"]
    ema = b.tensors("ema")
    assert all(torch.equal(v, ema[k]) for k, v in pipe.denoiser.state_dict().items())

    gen = load_recipe("generate_image.py")
    paths = gen.main(
        ["--ckpt", str(tmp_path / "run"), "--num", "3", "--batch", "2", "--steps", "3", "--label", "a",
         "--guidance", "2", "--seed", "1", "--out", str(tmp_path / "gen"), "--quiet"]
    )  # fmt: skip
    assert [p.name for p in paths] == ["sample-000-seed1.png", "sample-001-seed2.png", "sample-002-seed3.png"]
    images = [read_image(p) for p in paths]
    assert all(im.shape == (SIZE, SIZE, 3) and im.dtype == torch.uint8 for im in images)
    # Image k depends only on its seed; and the files hold exactly what the pipeline returns.
    direct = pipe.generate(1, seed=3, steps=3, label="a", guidance=2, progress=False)
    assert torch.equal(direct[0], images[2])
    # image-to-image from a file
    varied = gen.main(
        ["--ckpt", str(tmp_path / "run"), "--num", "1", "--steps", "4", "--init", str(data / "a" / "img1.png"),
         "--strength", "0.5", "--seed", "0", "--out", str(tmp_path / "var"), "--quiet"]
    )  # fmt: skip
    assert read_image(varied[0]).shape == (SIZE, SIZE, 3)

    # Inpainting keeps the known pixels exactly (pixel space, x0 pinned by inpaint).
    known = read_image(data / "b" / "img0.png")
    mask = torch.zeros(SIZE, SIZE)
    mask[:, : SIZE // 2] = 1
    out = pipe.generate(2, known=known, mask=mask, seed=0, steps=3, progress=False)
    assert torch.equal(out[:, :, : SIZE // 2], known[None, :, : SIZE // 2].expand(2, -1, -1, -1))
    assert not torch.equal(out[0, :, SIZE // 2 :], known[:, SIZE // 2 :])


def test_no_fused_kernels_is_saved_with_the_backbone_and_may_change_on_resume(tmp_path) -> None:
    trainer = load_recipe("train_image.py")
    data = square_images(tmp_path / "data")
    trainer.main([*common_args(data, tmp_path / "run", 2), "--no-fused-kernels"])
    assert ImagePipeline.from_pretrained(tmp_path / "run" / "pipeline").backbone.config.fused_kernels is False
    trainer.main(common_args(data, tmp_path / "run", 4))  # resumes: the kernels change no number's meaning
    assert train.latest_checkpoint(tmp_path / "run").step == 4
    assert ImagePipeline.from_pretrained(tmp_path / "run" / "pipeline").backbone.config.fused_kernels is True
