#!/bin/bash
# The call after call4.sh (same start): the bar's compiled training rows. Keep to the variants call 4
# shows paying (edit the --variants lists), since each compiled DiT-XL/2 costs a minute or more.
#  1. DiT-XL/2 and VideoDiT-B/2 compiled against diffusers compiled (bar: >= 1.2x; DiT-XL/2 >= 65% of the
#     matmul ceiling), with cuDNN SDPA first;
#  2. the video and mel U-Nets compiled, NCHW and channels-last (bar: >= 25% / 40% of the ceiling), first;
#  3. the moving digit in bf16 weights (one-clip latency).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 240 python3 benchmarks/train_throughput.py --only Video-UNet Mel-UNet-75M --compile-only \
  --variants channels_last --steps 10 --warmup 3 --out $W/train-unet-compiled > $W/train-unet-compiled.log 2>&1; pack
timeout 250 python3 benchmarks/train_throughput.py --only DiT-XL/2 VideoDiT-B/2 --compile-only \
  --variants sdpa_cudnn --steps 10 --warmup 3 --out $W/train-dit-compiled > $W/train-dit-compiled.log 2>&1; pack
timeout 60 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 --ours-bf16 \
  --modes compile+graphs reduce-overhead --out $W/latency/moving-digits-bf16 > $W/latency-md-bf16.log 2>&1
kill $PK; pack; ls -R $W | head -40
