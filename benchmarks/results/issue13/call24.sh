#!/bin/bash
# Issue-13 device call 24, run 2026-12-04 20:50-20:54 UTC on one H200, 265 s of wall time (same start as call4.sh: the wheels in .whl, carried). The mel U-Net
# compiled side by side with diffusers' UNet2DModel compiled (bar: >= 40% of the ceiling and >= 1.6x
# diffusers; diffusers' compiled side never reached before: its compilation ran past 240 s in call 5).
# Each side compiled as its library's Module.compile does (train_throughput.py now compiles a shallow copy
# in place): ours through UNet.compile, which forces Inductor's layout optimisation on (call 23: 40.2%),
# diffusers' with torch.compile's defaults.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w24; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 430 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --steps 10 --warmup 3 \
  --out $W/train-mel-compiled > $W/train-mel-compiled.log 2>&1
kill $PK; pack; ls -R $W | head -20
