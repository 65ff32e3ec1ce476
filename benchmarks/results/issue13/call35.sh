#!/bin/bash
# Issue-13 call (same start as call4.sh): the video DiT-B/2 compiled against Latte-equal-work diffusers, side
# by side (bar: >= 1.2x diffusers compiled; never reached: its compilations outlasted 200-s stages).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w35; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 560 python3 benchmarks/train_throughput.py --only VideoDiT-B/2 --compile-only --steps 10 --warmup 3 \
  --out $W/train-videodit-compiled > $W/train-videodit-compiled.log 2>&1
kill $PK; pack; ls -R $W | head -40
