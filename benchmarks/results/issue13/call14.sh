#!/bin/bash
# Issue-13 device call 14, run 2026-12-04 19:13-19:22 UTC (same start): diffusers' UNet3DConditionModel compiled, alone, with the time
# its compilation needs (call 9's 270-s stage ended inside it), against which call 9's 146.6 clips/s (ours
# compiled with CUDA graphs) is the bar's >= 2x; then ours with CUDA graphs profiled, where the 18.8% of the
# ceiling goes (bar: 25%).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w14; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 390 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --sides ref --steps 10 --warmup 3 \
  --out $W/train-video-ref > $W/train-video-ref.log 2>&1; pack
timeout 195 python3 benchmarks/profile_steps.py --only video-unet --modes compiled --compile-mode reduce-overhead \
  --out $W/profile-video-graphs > $W/profile-video-graphs.log 2>&1
kill $PK; pack; ls -R $W | head -40
