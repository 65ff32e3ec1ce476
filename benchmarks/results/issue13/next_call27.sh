#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh), after next_call26.sh: one moving digit and one
# DiT-XL/2 sample, ours compiled inside our CUDA graphs against diffusers' reduce-overhead (bar: >= 3x).
# The graphs now read bf16 copies of the float32 weights instead of casting each at every step: for the
# DiT that was 29% (call 1: 0.2509 s graphed with float32 weights, 0.1792 with bf16 weights); for the moving
# digit bf16 weights gained nothing measurable (call 8: 0.0893 s, call 2 with float32 weights 0.0782,
# call 16 0.0873), so its row is a repeat of the closest case (2.87x) with the code as it now is. The DiT
# with the SD-VAE-sized decode on both sides (the bar counts the decode).
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
