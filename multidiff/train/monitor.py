"""Rank-0 run monitoring: a tqdm bar with loss and samples/s, a JSONL log, optional TensorBoard.

``log.jsonl`` holds one JSON object per logged step (``{"step": …, "loss": …, …}``). On resume the
lines after the resumed step (written by the interrupted run after its last checkpoint) are dropped,
so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "read_log"]

LOG_NAME = "log.jsonl"


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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    os.replace(tmp, path)


class RunLogger:
    """Progress bar, JSONL log and (if installed) TensorBoard, active on the main process only.

    Args:
        run_dir: The run folder.
        total_steps: Steps of the whole run (for the bar).
        start_step: The step training starts (or resumes) from.
        enabled: False on ranks other than 0: every method is then a no-op.
        tensorboard: Also write TensorBoard events when ``tensorboard`` is installed.
        progress: Show a tqdm bar.
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
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / LOG_NAME
        self._bar = None
        self._tb = None
        self._last_time = time.perf_counter()
        self._samples = 0
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_after(self.path, start_step)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step)

    def count(self, samples: int) -> None:
        """Add samples seen since the last :meth:`log` (for samples/s); call every step."""
        self._samples += samples
        if self._bar is not None:
            self._bar.update(1)

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
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, step)
        return record

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        """Close the bar and TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_number(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the log stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
