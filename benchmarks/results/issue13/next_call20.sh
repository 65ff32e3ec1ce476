#!/bin/bash
# Next issue-13 call 20 (not run yet): the second of calls 19-21 (see next_call19.sh): diffusers' max-autotune,
# run alone, so that its autotuning choices are in the cache for call 21.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w20; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 580 python3 benchmarks/generation_latency.py --only moving-digits --runs 2 --warmup 1 \
  --modes max-autotune --out $W/latency/warm-diffusers > $W/latency-warm-diffusers.log 2>&1
kill $PK; pack; ls -R $W | head -20; du -sh /tmp/torchinductor_* 2>/dev/null
