"""Why do video models ignore their label? Several ``video_digits.py`` runs side by side on one GPU (issue 9).

    python benchmarks/video_ablations.py --out OUT --minutes 6 [--only NAME ...]

Each configuration of :data:`ABLATIONS` is one ``video_digits.py`` process (same data, same judge, the
same wall-time budget), all started together on the one GPU, so they share it: their throughputs are
not the recipe's (``video_digits.py`` alone measures that), but their quality after the same training time
compares the settings. Every run is judged at several guidance scales. The table of all runs lands in
``OUT/ablations.md`` (and each run's own files under ``OUT/NAME``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> extra video_digits.py arguments. "old" is the recipe as issue 9 found it.
ABLATIONS: dict[str, list[str]] = {
    "old": ["--p-mean", "-1.2", "--lr", "2e-4"],
    "frames1": ["--frames", "1", "--p-mean", "-1.2", "--lr", "2e-4"],
    "pnone1": ["--p-none", "1.0", "--p-mean", "-1.2", "--lr", "2e-4"],
    "pmean0": ["--p-mean", "0.0", "--lr", "2e-4"],
    "lr1e-3": ["--p-mean", "-1.2", "--lr", "1e-3"],
    "pmean0.5-lr1e-3": ["--p-mean", "0.5", "--lr", "1e-3"],
    "dit": ["--backbone", "dit", "--p-mean", "0.5", "--lr", "1e-3"],
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=6.0, help="training budget of every run")
    p.add_argument("--only", nargs="+", choices=sorted(ABLATIONS), help="run these configurations only")
    p.add_argument("--guidance", nargs="+", default=["1", "2", "4"])
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="passed to every run")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    bench = [sys.executable, str(HERE / "video_digits.py")]
    subprocess.run([*bench, "--out", str(out / "_data"), "--data", str(data), "--data-only"], check=True)
    names = args.only or list(ABLATIONS)
    procs = {}
    for name in names:
        cmd = [
            *bench, "--out", str(out / name), "--data", str(data), "--minutes", str(args.minutes),
            "--no-compile", "--workers", "2", "--gen-num", "200", "--guidance", *args.guidance,
            *ABLATIONS[name], *args.extra,
        ]  # fmt: skip
        log = open(out / f"{name}.log", "w")  # noqa: SIM115 (closed by the child's exit)
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        print(f"[start] {name}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.time()
    for name, proc in procs.items():
        rc = proc.wait()
        print(f"[done] {name} rc={rc} after {time.time() - t0:.0f} s", flush=True)
    lines = [
        f"{len(names)} runs side by side on one GPU, {args.minutes:g} min of training each (eager); rows: "
        "guidance scale. acc: frames classified as the digit asked for; id: identity through a clip; FD: "
        "per-frame Fréchet distance (floor: real vs real); jitter: centroid jitter (real clips beside it).",
        "",
        "| run | steps | loss | guidance | acc | id | FD (floor) | jitter (real) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        f = out / name / "video_digits.json"
        if not f.is_file():
            lines.append(f"| {name} | failed: see {name}.log | | | | | | |")
            continue
        r = json.loads(f.read_text())
        rows = r["quality"]["rows"]
        floor = rows["train clips (real-vs-real floor)"]
        real = rows["held-out clips (reference)"]
        for key, row in rows.items():
            if not key.startswith("generated"):
                continue
            w = key.split("guidance ")[-1] if "guidance" in key else r["generation"]["guidance"]
            lines.append(
                f"| {name} | {r['train']['steps']} | {r['train']['final_loss']:.4f} | {w} | "
                f"{row['accuracy']:.1%} | {row['identity_consistency']:.3f} | {row['frechet']:.2f} "
                f"({floor['frechet']:.2f}) | {row['centroid_jitter']:.2f} ({real['centroid_jitter']:.2f}) |"
            )
    table = "\n".join(lines) + "\n"
    (out / "ablations.md").write_text(table)
    print(table, flush=True)


if __name__ == "__main__":
    main()
