#!/bin/bash
# Issue-13 device call 16, run 2026-12-04 19:22-19:31 UTC (same start): one moving digit with Inductor's autotuning
# (kernel and convolution choices timed on the card) inside our CUDA graphs, against diffusers' own best
# (reduce-overhead, and max-autotune: torch's CUDA graphs over the autotuned network). Bar: >= 3x; call 2:
# 2.87x in the default compile mode. Each side's autotuning takes minutes, hence the one case.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w16; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 560 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 \
  --modes compile+graphs autotune+graphs reduce-overhead max-autotune \
  --out $W/latency/moving-digits-autotune > $W/latency-md-autotune.log 2>&1
kill $PK; pack; ls -R $W | head -40
