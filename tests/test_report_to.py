"""--report-to: TensorBoard events hold the logged scalars and the preview media byte for byte; W&B gets the
same (through a recording stand-in: the real client needs an account or its service); the loss curve and
the time estimate; bad names and missing packages are refused with the install hint."""

from __future__ import annotations

import re
import sys
import types

import imageio.v3 as iio
import numpy as np
import pytest

from multidiff.io import write_audio, write_image, write_video
from multidiff.train.monitor import RunLogger, parse_report_to


def _preview_folder(root):
    folder = root / "previews" / "step-00000004"
    folder.mkdir(parents=True)
    t = np.arange(8000) / 8000
    write_audio(folder / "sample-00.wav", (0.5 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), 8000)
    rng = np.random.default_rng(0)
    write_image(folder / "grid.png", rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    write_video(folder / "sample-0.gif", rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8), fps=8)
    return folder


def test_tensorboard_gets_scalars_audio_images_and_gifs(tmp_path) -> None:
    pytest.importorskip("tensorboard")  # the `log` extra
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLogger(tmp_path, 4, 0, progress=False, tensorboard=False, report_to="tensorboard")
    for step in (1, 2, 3, 4):
        log.count(2)
        log.log(step, loss=1.0 / step, lr=0.1)
    folder = _preview_folder(tmp_path)
    assert sorted(log.log_previews(4, folder)) == ["preview/grid", "preview/sample-0", "preview/sample-00"]
    log.close()
    acc = EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={"images": 0, "audio": 0, "scalars": 0}
    )
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert [e.step for e in acc.Scalars("train/lr")] == [1, 2, 3, 4]
    (audio,) = acc.Audio("preview/sample-00")
    assert audio.sample_rate == 8000 and audio.step == 4 and audio.length_frames == 8000
    (png,) = acc.Images("preview/grid")
    np.testing.assert_array_equal(iio.imread(png.encoded_image_string), iio.imread(folder / "grid.png"))
    (gif,) = acc.Images("preview/sample-0")
    assert gif.encoded_image_string == (folder / "sample-0.gif").read_bytes() and gif.width == 8
    assert (tmp_path / "loss.png").is_file()  # drawn with the preview and at close


class _FakeWandb(types.ModuleType):
    """Records what multidiff sends to wandb (init, log, finish) and builds media records."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.calls: list[tuple] = []
        self.Audio = lambda data, sample_rate, caption: ("audio", len(data), sample_rate, caption)
        self.Image = lambda path, caption: ("image", path, caption)
        self.Video = lambda path, format, caption: ("video", path, format, caption)

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return self

    def log(self, data, step):
        self.calls.append(("log", data, step))

    def finish(self):
        self.calls.append(("finish",))


def test_wandb_run_id_persists_and_media_are_sent(tmp_path, monkeypatch) -> None:
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    log = RunLogger(tmp_path, 4, 0, progress=False, tensorboard=False, report_to="wandb", config={"lr": 0.1})
    log.log(2, loss=0.5)
    log.log_previews(4, _preview_folder(tmp_path))
    log.close()
    init = fake.calls[0][1]
    run_id = (tmp_path / "wandb-id.txt").read_text().strip()
    assert re.fullmatch(r"[0-9a-z]{8}", run_id)  # the characters wandb's run ids use
    assert init["id"] == run_id and init["resume"] == "allow" and init["config"] == {"lr": 0.1}
    assert ("log", {"train/loss": 0.5}, 2) in fake.calls
    media = next(c for c in fake.calls if c[0] == "log" and "preview/grid" in c[1])
    assert media[2] == 4 and media[1]["preview/sample-00"] == ("audio", 8000, 8000, "sample-00")
    assert media[1]["preview/sample-0"][0] == "video" and media[1]["preview/sample-0"][2] == "gif"
    assert fake.calls[-1] == ("finish",)
    RunLogger(tmp_path, 8, 4, progress=False, tensorboard=False, report_to="wandb").close()
    assert [c[1]["id"] for c in fake.calls if c[0] == "init"] == [run_id, run_id]  # a resumed run keeps it


def test_wandb_offline_run_with_the_installed_package(tmp_path, monkeypatch) -> None:
    """The real wandb (offline, nothing sent): the run starts, logs the loss and a preview, and resumes."""
    pytest.importorskip("wandb", reason='wandb is the "log" extra')
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    log = RunLogger(tmp_path, 4, 0, progress=False, tensorboard=False, report_to="wandb", config={"lr": 0.1})
    log.log(2, loss=0.5)
    log.log_previews(4, _preview_folder(tmp_path))
    log.close()
    run_id = (tmp_path / "wandb-id.txt").read_text().strip()
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), sorted(p.name for p in (tmp_path / "wandb").iterdir())
    RunLogger(tmp_path, 8, 4, progress=False, tensorboard=False, report_to="wandb").close()
    assert (tmp_path / "wandb-id.txt").read_text().strip() == run_id


def test_report_to_names_and_missing_packages(tmp_path, monkeypatch) -> None:
    assert parse_report_to("tensorboard,wandb") == ("tensorboard", "wandb")
    assert parse_report_to("none") == () and parse_report_to(None) == ()
    with pytest.raises(ValueError, match="--report-to 'mlflow': choose from tensorboard, wandb"):
        parse_report_to("mlflow")
    import types

    monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))  # a stand-in, as in the tests above
    assert parse_report_to("wandb", installed=True) == ("wandb",)
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ValueError, match=r'pip install "multidiff\[log\]"'):
        RunLogger(tmp_path, 4, 0, progress=False, tensorboard=False, report_to="wandb")
    assert parse_report_to("wandb") == ("wandb",)  # the name alone is fine
    with pytest.raises(ValueError, match="--report-to wandb: the wandb package is not installed"):
        parse_report_to("wandb", installed=True)
    # the command refuses it with the other settings, before the data is read or the run folder made
    from media_utils import write_tones

    from multidiff.cli import main as cli

    data, run = write_tones(tmp_path / "data", (300.0, 500.0)), tmp_path / "run"
    assert cli(["train", "audio", "--data", str(data), "--out", str(run), "--preset", "tiny", "--steps", "1",
                "--device", "cpu", "--report-to", "wandb"]) == 2  # fmt: skip
    assert not run.exists()


def test_time_estimate_and_loss_curve(tmp_path, capsys) -> None:
    log = RunLogger(tmp_path, 100, 0, progress=False, tensorboard=False)
    for step in range(1, 31):
        log.count(1)
        log.log(step, loss=1.0 / step)
    left = log.estimate(30)
    assert left is not None and left >= 0
    out = capsys.readouterr().out
    lines = [line.split(":")[0] for line in out.splitlines() if "to finish" in line]
    assert lines == ["step 2/100", "step 25/100"]  # the first estimate, then one at each quarter
    log.close()
    assert iio.imread(tmp_path / "loss.png").ndim == 3


def test_wandb_that_cannot_start_is_one_line(tmp_path, monkeypatch) -> None:
    """No API key (or no network): a ValueError saying to log in or go offline, not wandb's traceback."""
    fake = _FakeWandb()

    def refuse(**kwargs):
        raise RuntimeError("No API key configured. Use `wandb login` to log in.\nmore lines")

    fake.init = refuse
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with pytest.raises(ValueError, match=r"wandb could not start a run \(No API key configured.*WANDB_MODE=offline"):
        RunLogger(tmp_path, 4, 0, progress=False, tensorboard=False, report_to="wandb")
