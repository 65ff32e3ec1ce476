#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh), after next_call29.sh: the video U-Net compiled
# with CUDA graphs (call 23: 169.9 clips/s, 21.8% of the ceiling; bar 25%):
#  1. GroupNorm from per-channel statistics (variant by_channel_group_norm) against ATen's group_norm (ours).
#     Each compilation took 173 s;
#  2. ours again with cuDNN timing its convolution algorithms (--cudnn-benchmark, as the training recipes run;
#     every convolution here is small), its compilation from Inductor's caches in /tmp.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w30; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 440 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --compile-mode reduce-overhead \
  --sides ours ours:by_channel_group_norm --variants by_channel_group_norm --steps 10 --warmup 3 \
  --out $W/train-video-graphs > $W/train-video-graphs.log 2>&1; pack
timeout 130 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --compile-mode reduce-overhead \
  --sides ours --cudnn-benchmark --steps 10 --warmup 3 --out $W/train-video-graphs-cudnn \
  > $W/train-video-graphs-cudnn.log 2>&1
kill $PK; pack; ls -R $W | head -20
