#!/bin/bash
# Call 9, after call8.sh (same start; best on the machine call 8 left warm): the video U-Net compiled
# with CUDA graphs (`--compile-mode reduce-overhead`: its eager step is launch-bound, GPU idle 72%), NCHW
# (channels-last left out: two compiles would not fit one call), then diffusers' UNet3DConditionModel
# compiled in torch's default mode, its best, which no call has reached yet (bar: >= 25% of the matmul ceiling and >= 2x diffusers).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w9; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 290 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --compile-mode reduce-overhead \
  --sides ours --steps 10 --warmup 3 \
  --out $W/train-video-graphs > $W/train-video-graphs.log 2>&1; pack
timeout 270 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --sides ref --steps 10 --warmup 3 \
  --out $W/train-video-ref > $W/train-video-ref.log 2>&1
kill $PK; pack; ls -R $W | head -40
