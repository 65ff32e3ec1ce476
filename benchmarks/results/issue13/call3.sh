#!/bin/bash
# Third issue-13 device call of 2026-12-04 (the session's last 244 s of device time): DiT-XL/2 batch 1 with
# multidiff's backbone in bf16 weights (call 2 failed at the FLOP count, which ran without autocast; fixed),
# then the moving-digit U-Net the same way. Packed after each; generation_latency writes after every mode.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 120 python3 benchmarks/generation_latency.py --only DiT-XL/2-b1 --runs 5 --warmup 2 --ours-bf16 \
  --modes graphs compile+graphs reduce-overhead --out $W/latency/DiT-XL-2-b1-bf16 > $W/latency-dit-bf16.log 2>&1; pack
timeout 60 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 --ours-bf16 \
  --modes compile+graphs reduce-overhead --out $W/latency/moving-digits-bf16 > $W/latency-md-bf16.log 2>&1
kill $PK; pack
