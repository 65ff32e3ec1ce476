"""Caption conditioning of the tiny video recipe on captioned moving-shape clips made here: train, gif
previews from prompts, exact resume (text encoder included), a changed setting refused, ``multidiff
generate video --prompt`` writing readable mp4s; composition with ``--labels`` and captioned ``--images``;
and the folders a caption run refuses (no metadata.csv, a file without a caption)."""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from multidiff import train
from multidiff.cli import load_recipe
from multidiff.cli import main as cli_main
from multidiff.io import write_image, write_video
from multidiff.nn.text import ByteTextEncoder
from multidiff.pipeline import VideoPipeline

torch.set_num_threads(1)

SIZE, FRAMES = 16, 4
COLOURS = {"red": (230, 40, 40), "blue": (40, 60, 230)}
MOVES = {"right": (1, 0), "down": (0, 1)}


def write_metadata(root: Path, rows: list[dict[str, str]]) -> None:
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def captioned_shapes(root: Path, frames: int = 8) -> Path:
    """Four clips, a 4 x 4 square of one colour gliding one way, captioned e.g. "red square moving down"
    (label: the colour) in metadata.csv."""
    root.mkdir(parents=True)
    rows = []
    for k, (colour, move) in enumerate((c, m) for c in COLOURS for m in MOVES):
        (dx, dy), x, y = MOVES[move], 2 + k, 3
        v = np.zeros((frames, SIZE, SIZE, 3), np.uint8)
        for f in range(frames):
            v[f, y + dy * f : y + dy * f + 4, x + dx * f : x + dx * f + 4] = COLOURS[colour]
        write_video(root / f"clip{k}.mp4", v, fps=8)
        rows.append({"path": f"clip{k}.mp4", "label": colour, "caption": f"{colour} square moving {move}"})
    write_metadata(root, rows)
    return root


def recipe_args(data: Path, out: Path, steps: int) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", str(steps), "--batch", "2",
        "--frames", str(FRAMES), "--size", str(SIZE), "--captions", "--caption-dropout", "0.3",
        "--ckpt-every", "2", "--preview-every", "2", "--preview-num", "1", "--sample-steps", "2",
        "--log-every", "1", "--device", "cpu",
    ]  # fmt: skip


def test_video_caption_recipe_trains_resumes_exactly_and_generates(tmp_path, capsys) -> None:
    trainer = load_recipe("train_video.py")
    data = captioned_shapes(tmp_path / "data")
    trainer.main(recipe_args(data, tmp_path / "full", 4))  # uninterrupted
    trainer.main(recipe_args(data, tmp_path / "run", 2))  # stopped at a checkpoint ...
    trainer.main(recipe_args(data, tmp_path / "run", 4))  # ... and resumed
    assert "resuming from" in capsys.readouterr().out

    full, resumed = train.latest_checkpoint(tmp_path / "full"), train.latest_checkpoint(tmp_path / "run")
    assert full.step == resumed.step == 4 and full.state["data"] == resumed.state["data"]
    for part in ("model", "ema", "optimizer"):
        a, b = full.tensors(part), resumed.tensors(part)
        assert sorted(a) == sorted(b), part
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert any(k.startswith("text_encoder.") for k in full.tensors("model"))
    # The byte encoder is trained jointly: its weights move between the checkpoints of steps 2 and 4.
    early, late = (c.tensors("model") for c in train.list_checkpoints(tmp_path / "full")[-2:])
    assert any(not torch.equal(early[k], late[k]) for k in early if k.startswith("text_encoder."))
    # Previews are drawn from the training captions.
    gif = tmp_path / "run" / "previews" / "step-00000004" / "sample-0.gif"
    assert iio.imread(gif, index=None).shape == (FRAMES, SIZE, SIZE, 3)
    with pytest.raises(train.ResumeConfigError, match=r"caption_dropout: 0.3 in the checkpoint, 0.5 now"):
        trainer.main([*recipe_args(data, tmp_path / "run", 6), "--caption-dropout", "0.5"])

    # The saved pipeline: EMA weights of the denoiser and of the text encoder, cross-attention in the U-Net.
    pipe = VideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert isinstance(pipe.text_encoder, ByteTextEncoder)
    assert pipe.backbone.config.context_dim == pipe.text_encoder.dim
    ema = resumed.tensors("ema")
    for k, v in pipe.denoiser.state_dict().items():
        assert torch.equal(v, ema["denoiser." + k]), k
    for k, v in pipe.text_encoder.state_dict().items():
        assert torch.equal(v, ema["text_encoder." + k].to(v.dtype)), k
    seen = []
    backbone_forward = pipe.backbone.forward

    def spy(x, c_noise, **kw):
        seen.append((x.shape[0], kw["context"].shape, kw["context_mask"].sum(1).tolist()))
        return backbone_forward(x, c_noise, **kw)

    pipe.backbone.forward = spy
    prompt = "red square moving right"
    pipe.generate(1, FRAMES, prompt=prompt, guidance=2.0, seed=0, steps=2, progress=False)
    L = len(prompt) + 1  # bytes + the start token
    assert seen and all(s == (2, (2, L, pipe.text_encoder.dim), [L, 1]) for s in seen)  # prompt, null caption

    # 'multidiff generate video --prompt': mp4s of 6 frames (longer than the training clips: windows).
    out = tmp_path / "gen"
    status = cli_main(
        ["generate", "video", "--ckpt", str(tmp_path / "run"), "--num", "2", "--frames", "6", "--steps", "2",
         "--prompt", "red square moving right", "--guidance", "2", "--seed", "3", "--out", str(out),
         "--quiet", "--device", "cpu"]
    )  # fmt: skip
    assert status == 0
    paths = sorted(out.glob("*.mp4"))
    assert [p.name for p in paths] == ["sample-000-seed3.mp4", "sample-001-seed4.mp4"]
    for p in paths:
        assert iio.imread(p, index=None).shape == (6, SIZE, SIZE, 3)


def test_video_captions_compose_with_labels_and_captioned_images(tmp_path) -> None:
    """--labels with --captions: classes from metadata.csv's label column; --images: stills captioned in
    their own metadata.csv train the same caption-conditional weights as one-frame clips."""
    trainer = load_recipe("train_video.py")
    data = captioned_shapes(tmp_path / "data")
    stills = tmp_path / "stills"
    stills.mkdir()
    rows = []
    for k, colour in enumerate(COLOURS):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[4:9, 5:10] = COLOURS[colour]
        write_image(stills / f"still{k}.png", img)
        rows.append({"path": f"still{k}.png", "label": colour, "caption": f"{colour} square"})
    write_metadata(stills, rows)
    args = [
        *recipe_args(data, tmp_path / "run", 2),
        "--labels",
        "--images",
        str(stills),
        "--image-every",
        "2",
    ]
    trainer.main([*args, "--preview-every", "0"])
    ckpt = train.latest_checkpoint(tmp_path / "run")
    assert ckpt.step == 2 and ckpt.state["config"]["classes"] == ["blue", "red"]
    assert ckpt.state["data"] == {"video": {"epoch": 0, "index": 2}, "images": {"epoch": 1, "index": 0}}
    pipe = VideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.labels == ["blue", "red"] and isinstance(pipe.text_encoder, ByteTextEncoder)
    video = pipe.generate(1, FRAMES, label="red", prompt="red square", seed=0, steps=2, progress=False)
    assert video.shape == (1, FRAMES, SIZE, SIZE, 3)

    # Stills without captions are refused, naming the folder (or the file).
    (stills / "metadata.csv").write_text("path,label\nstill0.png,red\nstill1.png,blue\n")
    with pytest.raises(ValueError, match=r"--captions: 2 file\(s\) in .*stills have no captions"):
        trainer.main(args)
    (stills / "metadata.csv").unlink()
    with pytest.raises(ValueError, match=r"--captions: .*stills has no metadata.csv"):
        trainer.main(args)


def test_video_caption_recipe_refuses_folders_without_captions(tmp_path, capsys) -> None:
    trainer = load_recipe("train_video.py")
    data = captioned_shapes(tmp_path / "data")
    # A file listed without a caption.
    (data / "metadata.csv").write_text(
        "path,caption\nclip0.mp4,red square\nclip1.mp4,red square\nclip2.mp4,blue square\nclip3.mp4\n"
    )
    with pytest.raises(
        ValueError, match=r"1 file\(s\) in .* have no captions in metadata.csv \(e.g. clip3.mp4\)"
    ):
        trainer.main(recipe_args(data, tmp_path / "run", 2))
    # No metadata.csv at all.
    (data / "metadata.csv").unlink()
    with pytest.raises(ValueError, match="has no metadata.csv"):
        trainer.main(recipe_args(data, tmp_path / "run", 2))
    # Settings refused before any data is read.
    plain = [a for a in recipe_args(data, tmp_path / "run", 2) if a != "--captions"]
    with pytest.raises(ValueError, match="--text-encoder needs --captions"):
        trainer.main([*plain, "--text-encoder", str(tmp_path)])
    with pytest.raises(SystemExit):
        trainer.main([*recipe_args(data, tmp_path / "run", 2), "--caption-dropout", "1"])
    assert "--caption-dropout: caption dropout must lie in [0, 1), got 1.0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_prompt_needs_a_caption_model(tmp_path) -> None:
    """generate_video.py --prompt with a pipeline trained without captions: a clear error, no traceback."""
    from multidiff.core.denoiser import Denoiser
    from multidiff.modalities.image import ImageAdapterConfig
    from multidiff.modalities.video import VideoAdapter
    from multidiff.nn.unet import UNet, UNetConfig

    unet = UNet(UNetConfig(channels=(8,), num_res_blocks=1, attention_levels=(), head_dim=8, norm_groups=4,
                           emb_dim=16, noise_freq_dim=8, video=True))  # fmt: skip
    adapter = VideoAdapter.from_config(ImageAdapterConfig(space="pixels"))
    VideoPipeline(Denoiser(unet, "edm", sigma_data=0.5), adapter, window=FRAMES, size=SIZE).save_pretrained(
        tmp_path / "p"
    )
    gen = load_recipe("generate_video.py")
    with pytest.raises(ValueError, match="trained without captions; --prompt needs a caption model"):
        gen.main(
            [
                "--ckpt",
                str(tmp_path / "p"),
                "--prompt",
                "red",
                "--out",
                str(tmp_path / "gen"),
                "--device",
                "cpu",
            ]
        )
