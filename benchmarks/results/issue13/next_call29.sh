#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh). The compiled mel U-Net (call 24: 561.2 samples/s,
# 40.1% of the ceiling, 1.99x diffusers compiled; bar 40% and 1.6x), two changes measured side by side:
#  1. GroupNorm from per-channel statistics (variant by_channel_group_norm; multidiff.nn.fused.group_norm_by_channel,
#     off by default until this measures it) against ATen's group_norm (ours as calls 23-24 ran it), with
#     diffusers compiled (its channels-last GroupNorms took 36.0 ms of a 113.9-ms step against 27.9 in NCHW,
#     call 23). Each compilation takes about 100 s;
#  2. both sides again with cuDNN timing its convolution algorithms (--cudnn-benchmark, as the training recipes
#     run; every benchmark row so far ran without it); Inductor's caches in /tmp shorten these compilations.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w29; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 400 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --steps 10 --warmup 3 \
  --variants by_channel_group_norm --out $W/train-mel-compiled > $W/train-mel-compiled.log 2>&1; pack
timeout 170 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --steps 10 --warmup 3 \
  --cudnn-benchmark --out $W/train-mel-compiled-cudnn > $W/train-mel-compiled-cudnn.log 2>&1
kill $PK; pack; ls -R $W | head -20
