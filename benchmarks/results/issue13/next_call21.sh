#!/bin/bash
# Next issue-13 call 21 (not run yet): the last of calls 19-21 (see next_call19.sh), on the same warm machine:
# one moving digit, all four modes side by side in one run, the autotuning choices read from the cache
# that calls 19 and 20 filled (the call 16 command).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w21; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 580 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 \
  --modes compile+graphs autotune+graphs reduce-overhead max-autotune \
  --out $W/latency/moving-digits-autotune > $W/latency-md-autotune.log 2>&1
kill $PK; pack; ls -R $W | head -40
