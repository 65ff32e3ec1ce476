#!/bin/bash
# Issue-13 device call 15, run 2026-12-04 20:19-20:22 UTC on one H200, 183 s of wall time (same start as call4.sh): where the bars' remaining gaps are. Each fused
# op's GPU time (fused_ops.py now also sums the profiler's CUDA events per call: call 13's autotuner timed
# the LayerNorm kernels at 63 and 82 µs where the synchronised single call took 157 and 630 µs, so the op
# table's wall times are mostly outside the kernels), the eager DiT-XL/2 step profiled (bar: 1.3x diffusers eager;
# calls 13 and 17: 1.27x, 1.25x) and the compiled mel U-Net step (bar: 40% of the ceiling; calls 5, 10,
# 12: 34%, GPU-bound). (The video DiT-B/2 compiled stage was left for a later call: the eager DiT-XL/2
# bar comes first.)
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w15; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 60 python3 benchmarks/fused_ops.py --out $W/fused-ops > $W/fused-ops.log 2>&1; pack
timeout 150 python3 benchmarks/profile_steps.py --only dit-xl2 --modes eager --sides multidiff diffusers \
  --out $W/profile-dit-eager > $W/profile-dit-eager.log 2>&1; pack
timeout 190 python3 benchmarks/profile_steps.py --only mel-unet --modes compiled \
  --out $W/profile-mel-compiled > $W/profile-mel-compiled.log 2>&1
kill $PK; pack; ls -R $W | head -40
