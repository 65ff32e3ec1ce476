#!/bin/bash
# Call 12 (typed as one command, on the same warm machine): the mel U-Net's channels-last row that call 10's
# 220-s stage cut after the NCHW row; Inductor's cache in /tmp kept its compilation from call 10.
set -u
export PYTHONUNBUFFERED=1
mkdir -p /tmp/w12
timeout 225 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --compile-mode reduce-overhead \
  --variants channels_last --sides ours:channels_last --steps 10 --warmup 3 \
  --out /tmp/w12/train-mel-cl-graphs > /tmp/w12/train-mel-cl-graphs.log 2>&1
tar czf $OUT/results.tgz -C /tmp/w12 .
