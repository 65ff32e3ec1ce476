#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh): the video U-Net against diffusers'
# UNet3DConditionModel, both compiled with CUDA graphs (reduce-overhead), side by side in one run (bar: >= 2x
# diffusers compiled; ours 169.9 clips/s in call 23). diffusers' whole-graph compilation outlasted 270 and
# 390 s in calls 9 and 14 (next_call18.sh gives it a whole call, alone); here it is compiled block by block
# (--ref-regional: its down, mid and up blocks each on their own, diffusers' regional compilation), which on
# the CPU compiled the tiny configuration with ours in 4.4 minutes.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w32; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 580 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --compile-mode reduce-overhead \
  --ref-regional --steps 10 --warmup 3 --out $W/train-video-graphs-vs-regional > $W/train-video-graphs-vs-regional.log 2>&1
kill $PK; pack; ls -R $W | head -20
