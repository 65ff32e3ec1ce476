"""Issue 9's wiring checks for class-conditional video: the label reaches every block of both backbones, the
label stored with a clip is the one of its frames after the stream and the frame cache, and generation maps
label names to the indices training used."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from multidiff.data.common import SkippedFileWarning
from multidiff.data.video import VideoFolder
from multidiff.io import write_video
from multidiff.nn.dit import DiT, DiTConfig
from multidiff.nn.unet import ResBlock, UNet, UNetConfig
from multidiff.train import StreamLayout, stream_loader


def _video_backbones() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    unet = UNet(
        UNetConfig(
            in_channels=3, channels=(16, 32), num_res_blocks=1, attention_levels=(1,), head_dim=16,
            norm_groups=8, num_classes=3, cond_channels=4, video=True,
        )
    )  # fmt: skip
    dit = DiT(
        DiTConfig(
            in_channels=3, patch=(1, 2, 2), width=32, depth=4, heads=2, attention="factorised",
            num_classes=3, cond_channels=4,
        )
    )  # fmt: skip
    return {"unet": unet, "dit": dit}


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_the_label_reaches_every_block(name: str) -> None:
    """Every residual block (U-Net) and every transformer block (DiT), spatial and temporal alike, gets a
    conditioning input that changes with the label, and so does the output."""
    model = _video_backbones()[name]
    blocks = (
        [m.emb_proj for m in model.modules() if isinstance(m, ResBlock)]
        if name == "unet"
        else [b.ada for b in model.blocks]
    )
    assert len(blocks) >= 4
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    current: list[int] = [0]
    hooks = [b.register_forward_hook(lambda m, a, o: seen[current[0]].append(a[0].detach())) for b in blocks]
    x = torch.randn(2, 3, 4, 8, 8)
    cond = torch.zeros(2, 4, 4, 8, 8)
    outs = []
    for label in (0, 1):
        current[0] = label
        with torch.no_grad():
            for p in model.parameters():  # zero-initialised outputs would hide a difference downstream
                if p.abs().sum() == 0:
                    p.normal_(0, 0.02)
            outs.append(model(x, torch.zeros(2), labels=torch.full((2,), label), cond_channels=cond))
    for h in hooks:
        h.remove()
    assert len(seen[0]) == len(seen[1]) == len(blocks)
    for k, (a, b) in enumerate(zip(seen[0], seen[1])):
        assert not torch.allclose(a, b), f"block {k} does not see the label"
    assert not torch.allclose(outs[0], outs[1])


def _labelled_folder(root: Path) -> dict[str, int]:
    """Three classes whose clips have their own brightness, created in non-alphabetical order."""
    shade = {"zebra": 40, "ant": 120, "moth": 200}
    for name, value in shade.items():
        (root / name).mkdir(parents=True)
        for k in range(3):
            clip = np.full((6, 8, 8, 3), value + k, np.uint8)
            write_video(root / name / f"c{k}.gif", clip, 8)
    return shade


def test_labels_follow_their_clips_through_the_stream_and_the_frame_cache(tmp_path: Path) -> None:
    """Classes are the sorted folder names; through the training stream (two epochs, shuffled, two
    workers) and the uint8 frame cache, every item's label is the class whose frames it carries."""
    shade = _labelled_folder(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        data = VideoFolder(
            tmp_path / "data", frames=4, size=8, labels="auto", frame_cache_dir=tmp_path / "fc"
        )
    assert data.classes == ["ant", "moth", "zebra"]
    layout = StreamLayout(len(data), micro_batch=4, seed=5)
    loader = iter(stream_loader(data, layout, num_workers=2, num_steps=5))
    checked = 0
    for _ in range(5):
        batch = next(loader)
        for label, path, frames in zip(batch["label"], batch["path"], batch["frames"]):
            cls = data.classes[int(label)]
            assert path.startswith(cls + "/")
            assert shade[cls] <= int(frames[0, 0, 0, 0]) <= shade[cls] + 2
            checked += 1
    assert checked == 20


def test_generation_maps_label_names_to_the_training_indices(tmp_path: Path) -> None:
    """The recipe stores the dataset's class list with the pipeline; a name asks for the same index
    that name had in training, also for class names that are numbers (whose sorted order is not
    numeric)."""
    from multidiff.cli import load_recipe
    from multidiff.pipeline import VideoPipeline

    root = tmp_path / "data"
    for name in ("10", "2", "1"):
        (root / name).mkdir(parents=True)
        write_video(root / name / "a.gif", np.full((4, 8, 8, 3), 9, np.uint8), 8)
    run = tmp_path / "run"
    torch.set_num_threads(1)
    load_recipe("train_video.py").main(
        ["--data", str(root), "--out", str(run), "--labels", "--frames", "2", "--size", "8",
         "--steps", "1", "--batch", "2", "--preview-every", "0", "--sample-steps", "2", "--device", "cpu"]
    )  # fmt: skip
    data = VideoFolder(root, frames=2, size=8, labels="auto")
    pipe = VideoPipeline.from_pretrained(run / "pipeline")
    assert pipe.labels == data.classes == ["1", "10", "2"]
    assert pipe.label_tensor(["2", "10", "1"], 3).tolist() == [2, 1, 0]
    assert pipe.sampling.guidance == 1.5  # the scale that met issue 9's bar, saved with the model
