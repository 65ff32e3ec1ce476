#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh), after next_call29.sh: the video U-Net compiled
# with CUDA graphs, GroupNorm from per-channel statistics (variant by_channel_group_norm) against ATen's
# group_norm (ours; call 23: 169.9 clips/s, 21.8% of the ceiling, bar 25%). Each compilation took 173 s.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w30; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 560 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --compile-mode reduce-overhead \
  --sides ours ours:by_channel_group_norm --variants by_channel_group_norm --steps 10 --warmup 3 \
  --out $W/train-video-graphs > $W/train-video-graphs.log 2>&1
kill $PK; pack; ls -R $W | head -20
