"""benchmarks/video_digits.py: a latent model is judged beside its VAE's own round trip of the floor clips
(the best any model on those latents can draw), both through the CPU smoke run and exactly on a lossless
stand-in for the adapter."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from media_utils import tiny_vae

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import video_digits as vd  # noqa: E402

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")


class LosslessAdapter(torch.nn.Module):
    """encode/decode as a video adapter's, but exact: uint8 RGB frames -> float -> the same uint8."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert frames.shape[-1] == 3 and torch.equal(frames[..., 0], frames[..., 2])  # grey as RGB
        return frames.float()

    def decode(self, latents: torch.Tensor, out_device: str) -> torch.Tensor:
        return latents.round().to(torch.uint8).to(out_device)


def test_the_round_trip_of_a_lossless_adapter_gives_the_clips_back_in_batches() -> None:
    clips = torch.randint(0, 256, (7, 4, 8, 8), dtype=torch.uint8)
    adapter = LosslessAdapter()
    assert torch.equal(vd.vae_round_trip(adapter, clips, batch=3), clips) and adapter.calls == 3


def test_a_latent_run_reports_its_vae_ceiling(tmp_path: Path) -> None:
    tiny_vae().save_pretrained(tmp_path / "vae")
    result = vd.main(["--out", str(tmp_path / "out"), "--tiny", "--device", "cpu", "--vae", str(tmp_path / "vae"),
                      "--train-clips", "60", "--heldout-clips", "20", "--gen-num", "20", "--gen-batch", "10"])  # fmt: skip
    rows = result["quality"]["rows"]
    assert list(rows)[:3] == ["held-out clips (reference)", "train clips (real-vs-real floor)", vd.VAE_ROW]
    ceiling = rows[vd.VAE_ROW]
    assert ceiling["videos"] == 20 and math.isfinite(ceiling["frechet"]) and 0 <= ceiling["accuracy"] <= 1
    saved = json.loads((tmp_path / "out" / "video_digits.json").read_text())
    assert vd.VAE_ROW in saved["quality"]["rows"]
    assert vd.VAE_ROW in (tmp_path / "out" / "video_digits.md").read_text()
