#!/bin/bash
# The third call (same start): the mel U-Net compiled with CUDA graphs, NCHW and channels-last, and diffusers'
# UNet2DModel compiled (bar: >= 40% of the ceiling, >= 1.6x diffusers; call 5: 34%), then the video DiT-B/2
# compiled against Latte-equal-work diffusers (bar: >= 1.2x; not reached by call 5).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 220 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --compile-mode reduce-overhead \
  --variants channels_last --sides ours ours:channels_last --steps 10 --warmup 3 \
  --out $W/train-mel-graphs > $W/train-mel-graphs.log 2>&1; pack
timeout 140 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --sides ref --steps 10 --warmup 3 \
  --out $W/train-mel-ref > $W/train-mel-ref.log 2>&1; pack
timeout 220 python3 benchmarks/train_throughput.py --only VideoDiT-B/2 --compile-only --steps 10 --warmup 3 \
  --out $W/train-videodit-compiled > $W/train-videodit-compiled.log 2>&1
kill $PK; pack; ls -R $W | head -40
