"""Rank-0 run monitoring: a tqdm bar with loss and samples/s, a JSONL log, the loss curve, the estimated time
to finish, and optionally TensorBoard or Weights & Biases (``--report-to``, the ``log`` extra).

``log.jsonl`` holds one JSON object per logged step (``{"step": …, "loss": …, …}``). On resume the
lines after the resumed step (written by the interrupted run after its last checkpoint) are dropped,
so the log reads as one uninterrupted run. ``loss.png`` (the loss against the step, drawn by
:func:`multidiff.plots.loss_curve_png`) is redrawn at most every :data:`PLOT_EVERY_S` seconds, with each
preview and when the session ends. Preview folders are sent to the trackers asked for: wavs as audio,
PNGs (spectrograms, grids, strips) as images and GIFs as videos.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunLogger", "read_log", "REPORT_TO", "format_duration"]

LOG_NAME = "log.jsonl"
LOSS_PNG = "loss.png"
#: Seconds between redraws of ``loss.png`` while training.
PLOT_EVERY_S = 30.0
#: The trackers ``--report-to`` takes.
REPORT_TO = ("tensorboard", "wandb")
_WANDB_ID = "wandb-id.txt"


def format_duration(seconds: float) -> str:
    """``3 h 05 min``, ``4 min 12 s`` or ``9 s``."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _not_installed(name: str) -> str:
    return f'--report-to {name}: the {name} package is not installed; pip install "multidiff[log]" (or pip install {name})'


def parse_report_to(value: str | Sequence[str] | None, installed: bool = False) -> tuple[str, ...]:
    """``"tensorboard"``, ``"wandb"``, ``"tensorboard,wandb"``, ``"none"`` or a sequence of them, checked;
    with ``installed``, each must also be importable (checked without importing it).

    Raises:
        ValueError: For a name not in :data:`REPORT_TO`, or (``installed``) a tracker not installed.
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(i.strip().lower() for i in items if i.strip() and i.strip() != "none"))
    bad = [n for n in names if n not in REPORT_TO]
    if bad:
        raise ValueError(f"--report-to {bad[0]!r}: choose from {', '.join(REPORT_TO)} or none")
    if installed:
        import importlib.util

        for name in names:
            if sys.modules.get(name) is not None:  # imported already (or stood in for)
                continue
            if importlib.util.find_spec(name) is None:
                raise ValueError(_not_installed(name))
    return names


def read_log(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``RUN/log.jsonl`` (an unreadable last line, from a crash mid-write, is ignored)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _truncate_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    keep = [r for r in read_log(path.parent) if isinstance(r.get("step"), int) and r["step"] <= step]
    from multidiff.atomic import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


class RunLogger:
    """Progress bar, JSONL log, loss curve, time estimate and the trackers asked for, on the main process only.

    Args:
        run_dir: The run folder.
        total_steps: Steps of the whole run (for the bar).
        start_step: The step training starts (or resumes) from.
        enabled: False on ranks other than 0: every method is then a no-op.
        tensorboard: Also write TensorBoard events when ``tensorboard`` is installed (silently skipped when
            it is not; ``report_to=("tensorboard",)`` insists instead).
        progress: Show a tqdm bar.
        report_to: Trackers to send scalars and previews to (:data:`REPORT_TO`; a comma-separated string
            works too). Each must be installed (``pip install "multidiff[log]"``), else a ValueError says so.
        config: The run's settings, given to Weights & Biases as the run config.
        estimate: Print the estimated time to finish after the first logged steps and at each quarter.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        total_steps: int,
        start_step: int = 0,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
        report_to: str | Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        estimate: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / LOG_NAME
        self.total_steps, self.start_step = int(total_steps), int(start_step)
        self.report_to = parse_report_to(report_to)
        self._bar = None
        self._tb = None
        self._wandb: Any = None
        self._last_time = time.perf_counter()
        self._samples = 0
        self._steps_done = 0
        self._clock_start: float | None = None  # after the first step (which may compile): the rate's start
        self._estimate = estimate
        self._next_estimate = 0.0  # the fraction of the run at which the next estimate is printed
        self._last_plot = time.monotonic()
        self._losses: list[dict[str, Any]] = []
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_after(self.path, start_step)
        self._losses = [
            {"step": r["step"], "loss": r["loss"]} for r in read_log(self.path.parent) if "loss" in r
        ]
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )
        if tensorboard or "tensorboard" in self.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                if "tensorboard" in self.report_to:
                    raise ValueError(_not_installed("tensorboard")) from None
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step)
        if "wandb" in self.report_to:
            self._wandb = _start_wandb(Path(run_dir), config)

    def count(self, samples: int) -> None:
        """Add samples seen since the last :meth:`log` (for samples/s); call every step."""
        self._samples += samples
        if self._bar is not None:
            self._bar.update(1)
        if self._clock_start is None:
            self._clock_start = time.perf_counter()
        else:
            self._steps_done += 1

    def estimate(self, step: int) -> float | None:
        """Seconds left to ``total_steps`` at the mean time per step since the first step of this session
        (None before two steps were counted)."""
        if self._clock_start is None or self._steps_done < 1:
            return None
        per_step = (time.perf_counter() - self._clock_start) / self._steps_done
        return per_step * max(0, self.total_steps - step)

    def _say_estimate(self, step: int) -> None:
        left = self.estimate(step)
        span = max(1, self.total_steps - self.start_step)
        done = (step - self.start_step) / span
        if left is None or not self._estimate or done < self._next_estimate or step >= self.total_steps:
            return
        self._next_estimate = (math.floor(done * 4) + 1) / 4  # then at the next quarter of the run
        per_step = left / max(1, self.total_steps - step)
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        self.write(
            f"step {step}/{self.total_steps}: {per_step:.3g} s/step, about {format_duration(left)} to "
            f"finish (~{finish}; previews and checkpoints add to it)"
        )

    def log(self, step: int, **metrics: float | int | str) -> dict[str, Any]:
        """Write one record for ``step`` (adds ``samples_per_s`` since the previous call and a timestamp)."""
        if not self.enabled:
            return {}
        now = time.perf_counter()
        elapsed = now - self._last_time
        record: dict[str, Any] = {"step": int(step), **metrics}
        if self._samples and elapsed > 0:
            record["samples_per_s"] = self._samples / elapsed
        record["time"] = time.time()
        self._last_time, self._samples = now, 0
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: _json_number(v) for k, v in record.items()}) + "\n")
        if self._bar is not None:
            shown = {
                k: f"{v:.4g}"
                for k, v in record.items()
                if k in ("loss", "samples_per_s", "lr") and isinstance(v, float)
            }
            self._bar.set_postfix(shown, refresh=False)
        scalars = {
            f"train/{k}": v
            for k, v in record.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))
        if "loss" in record:
            self._losses.append({"step": int(step), "loss": _json_number(record["loss"])})
            if time.monotonic() - self._last_plot >= PLOT_EVERY_S:
                self.plot_loss()
        self._say_estimate(int(step))
        return record

    def plot_loss(self) -> Path | None:
        """Redraw ``RUN/loss.png`` from the losses logged so far (None while none is finite)."""
        if not self.enabled:
            return None
        from multidiff.plots import loss_curve_png

        self._last_plot = time.monotonic()
        try:
            return loss_curve_png(self._losses, self.path.parent / LOSS_PNG).path
        except ValueError:  # nothing finite logged yet
            return None

    def log_previews(self, step: int, folder: str | os.PathLike[str]) -> list[str]:
        """Send a preview folder's files to the trackers: ``*.wav`` as audio, ``*.png`` as images, ``*.gif``
        as videos (tags ``preview/<file stem>``); also redraws ``loss.png``. Returns the tags sent."""
        if not self.enabled:
            return []
        self.plot_loss()
        if self._tb is None and self._wandb is None:
            return []
        files = sorted(
            p
            for p in Path(folder).iterdir()
            if p.suffix.lower() in (".wav", ".png", ".gif") and not p.name.startswith(".")  # no temporaries
        )
        tags = []
        media: dict[str, Any] = {}
        for path in files:
            tag = f"preview/{path.stem}"
            kind = {".wav": "audio", ".png": "image", ".gif": "video"}[path.suffix.lower()]
            if self._tb is not None:
                _tb_media(self._tb, kind, tag, path, step)
            if self._wandb is not None:
                media[tag] = _wandb_media(self._wandb, kind, path)
            tags.append(tag)
        if self._wandb is not None and media:
            self._wandb.log(media, step=int(step))
        if self._tb is not None:
            self._tb.flush()
        return tags

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        """Draw the loss curve; close the bar and the trackers."""
        if self.enabled and self._losses:
            self.plot_loss()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(run: Path, config: Mapping[str, Any] | None) -> Any:
    """A Weights & Biases run for the run folder: its id is kept in ``RUN/wandb-id.txt``, so a resumed
    training continues the same W&B run; files go under ``RUN/wandb``. ``WANDB_PROJECT`` names the project
    (default ``multidiff``) and ``WANDB_MODE=offline`` keeps everything local."""
    try:
        import wandb
    except ImportError:
        raise ValueError(_not_installed("wandb")) from None
    id_file = run / _WANDB_ID
    if id_file.is_file():
        run_id = id_file.read_text(encoding="utf-8").strip()
    else:
        import secrets

        from multidiff.atomic import write_text

        run_id = secrets.token_hex(4)  # 8 characters of [0-9a-f], as wandb's own ids (not its private helper)
        write_text(id_file, run_id + "\n", durable=True)
    try:
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", "multidiff"), name=run.resolve().name, id=run_id,
            resume="allow", dir=str(run), config=dict(config or {}),
        )  # fmt: skip
    except Exception as err:  # no API key, no network: say what to do, in one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"--report-to wandb: wandb could not start a run ({first}); run `wandb login`, or set "
            "WANDB_MODE=offline to keep the run on this machine"
        ) from None


def _tb_media(writer: Any, kind: str, tag: str, path: Path, step: int) -> None:
    """One preview file into TensorBoard: audio (mono mix, [-1, 1]), an image, or a GIF as an animated
    image summary (TensorBoard's image dashboard shows GIFs; ``add_video`` would need moviepy)."""
    if kind == "audio":
        import soundfile as sf

        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
        writer.add_audio(tag, np.clip(wave.mean(axis=1), -1, 1), step, sample_rate=sr)
    elif kind == "image":
        import imageio.v3 as iio

        writer.add_image(tag, np.asarray(iio.imread(path))[..., :3], step, dataformats="HWC")
    else:
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        with Image.open(path) as im:
            width, height = im.size
        image = Summary.Image(
            height=height, width=width, colorspace=3, encoded_image_string=path.read_bytes()
        )
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _wandb_media(wandb_run: Any, kind: str, path: Path) -> Any:
    """One preview file as a W&B media object (audio, image or GIF video)."""
    import wandb

    if kind == "audio":
        import soundfile as sf

        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return wandb.Audio(wave.mean(axis=1), sample_rate=sr, caption=path.stem)
    if kind == "image":
        return wandb.Image(str(path), caption=path.stem)
    return wandb.Video(str(path), format="gif", caption=path.stem)


def _json_number(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the log stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
