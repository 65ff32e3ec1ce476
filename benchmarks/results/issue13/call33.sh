#!/bin/bash
# Issue-13 call (same start as call4.sh: the wheels in .whl, carried): the video U-Net bar (compiled >= 25% of
# the ceiling and >= 2x diffusers compiled) in one run. Ours with GroupNorm from per-channel statistics
# (variant by_channel_group_norm; call 23 ran ATen's group_norm: 169.9 clips/s, 21.8%), then diffusers'
# UNet3DConditionModel compiled block by block (--ref-regional; its whole-graph compilation outlasted 270 and
# 390 s in calls 9 and 14), both with CUDA graphs (reduce-overhead) and cuDNN timing its convolution
# algorithms (--cudnn-benchmark, as the training recipes run).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w33; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 560 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --compile-mode reduce-overhead \
  --variants by_channel_group_norm --sides ours:by_channel_group_norm ref --ref-regional --cudnn-benchmark \
  --steps 10 --warmup 3 --out $W/train-video-graphs-vs-regional > $W/train-video-graphs-vs-regional.log 2>&1
kill $PK; pack; ls -R $W | head -20
