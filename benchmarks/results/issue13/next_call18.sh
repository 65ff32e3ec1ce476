#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh), the whole call for one stage: diffusers'
# UNet3DConditionModel compiled (default mode), the reference of the video U-Net's >= 2x bar. Calls 9 and
# 14 ended inside its compilation at 270 and 390 s (no graph breaks: torch._dynamo.explain on the tiny
# configuration finds one graph); on 2026-11-29 it measured 31.8 clips/s on an H200. Ours with CUDA graphs:
# 146.6 clips/s (call 9).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w18; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 570 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --sides ref --steps 10 --warmup 3 \
  --out $W/train-video-ref > $W/train-video-ref.log 2>&1
kill $PK; pack; ls -R $W | head -20
