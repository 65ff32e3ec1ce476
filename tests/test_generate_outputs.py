"""Generation never overwrites a file (issue 11, item 7): a second run into the same folder gets new names and
leaves the first run's files as they were; ``--overwrite`` replaces them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from multidiff.cli import main as cli
from multidiff.io import free_path, write_image

torch.set_num_threads(1)


def test_free_path_finds_the_first_free_name(tmp_path: Path) -> None:
    p = tmp_path / "a.wav"
    assert free_path(p) == p
    p.write_bytes(b"x")
    (tmp_path / "a-2.wav").write_bytes(b"x")
    assert free_path(p) == tmp_path / "a-3.wav" and free_path(p, overwrite=True) == p
    (tmp_path / "a-3.png").write_bytes(b"")  # a companion file's name counts too when asked
    assert free_path(p, also=(".png",)) == tmp_path / "a-4.wav" and free_path(p) == tmp_path / "a-3.wav"


def test_a_second_generation_gets_new_names_and_overwrite_replaces(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for k in range(2):
        write_image(data / f"{k}.png", np.random.default_rng(k).integers(0, 256, (8, 8, 3), np.uint8))
    run = tmp_path / "run"
    assert cli(["train", "image", "--data", str(data), "--out", str(run), "--size", "8", "--steps", "1",
                "--batch", "2", "--device", "cpu"]) == 0  # fmt: skip
    gen = ["generate", "image", "--ckpt", str(run), "--num", "1", "--steps", "2", "--seed", "3", "--quiet",
           "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli(gen) == 0
    first = tmp_path / "out" / "sample-000-seed3.png"
    first.write_bytes(b"the user's own file")  # whatever is there must survive
    assert cli(gen) == 0
    assert first.read_bytes() == b"the user's own file"
    assert (tmp_path / "out" / "sample-000-seed3-2.png").stat().st_size > 100
    assert cli([*gen, "--overwrite"]) == 0
    assert first.read_bytes() != b"the user's own file"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "sample-000-seed3-2.png",
        "sample-000-seed3.png",
    ]
