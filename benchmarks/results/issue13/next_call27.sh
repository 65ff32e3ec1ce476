#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh), after next_call26.sh: one moving digit and one
# DiT-XL/2 sample, ours compiled inside our CUDA graphs against diffusers' reduce-overhead (bar: >= 3x).
# Until now every step cast each float32 weight again inside the graph (call 2: moving digit 0.0782 s
# against 0.2243, 2.87x; 262 of the video U-Net's 377 parameters); the graphs now read bf16 copies. The DiT
# with float32 weights (call 1: 0.2509 s graphed, against 0.1792 with bf16 weights) and with the
# SD-VAE-sized decode on both sides (the bar counts the decode).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w27; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 280 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 \
  --modes compile+graphs reduce-overhead --out $W/latency/moving-digits > $W/latency-md.log 2>&1; pack
timeout 290 python3 benchmarks/generation_latency.py --only DiT-XL/2-b1 --runs 5 --warmup 2 \
  --decode --modes compile+graphs reduce-overhead --out $W/latency/dit-b1 > $W/latency-dit.log 2>&1
kill $PK; pack; ls -R $W | head -40
