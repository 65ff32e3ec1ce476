#!/bin/bash
# Next issue-13 calls 19-21 (not run yet; same start as call4.sh), back to back on one warm machine, so that
# Inductor's caches in /tmp (compiled graphs, autotuning choices) carry from one to the next: call 16 ran
# out of its 560 s inside the autotuning of ours alone (37 rounds). Call 19 fills the cache for ours
# (autotune+graphs), call 20 for diffusers (max-autotune), call 21 times all four modes side by side in one
# run (bar: one moving digit >= 3x diffusers compiled; call 2: 2.87x in the default mode).
# Since call 24, generation_latency.py compiles ours through UNet.compile (Inductor's layout optimisation
# forced on), which call 2 and call 16 did not.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w19; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 580 python3 benchmarks/generation_latency.py --only moving-digits --runs 2 --warmup 1 \
  --modes autotune+graphs --out $W/latency/warm-ours > $W/latency-warm-ours.log 2>&1
kill $PK; pack; ls -R $W | head -20; du -sh /tmp/torchinductor_* 2>/dev/null
