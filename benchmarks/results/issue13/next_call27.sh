#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh), after next_call26.sh: one moving digit, ours
# compiled inside our CUDA graphs against diffusers' reduce-overhead (bar: >= 3x; the closest case: 2.87x in
# call 2, 0.0782 s against 0.2243), twice: as the code now is, then with cuDNN timing its convolution
# algorithms per shape (--cudnn-benchmark, both sides; off by default in torch, and every convolution here is
# small: 32 frames of 32x32 at 32-128 channels). The graphs now read bf16 copies of the float32 weights
# instead of casting each at every step; bf16 weights gained this case nothing measurable in call 8.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w27; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 270 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 \
  --modes compile+graphs reduce-overhead --out $W/latency/moving-digits > $W/latency-md.log 2>&1; pack
timeout 270 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 --cudnn-benchmark \
  --modes compile+graphs reduce-overhead --out $W/latency/moving-digits-cudnn > $W/latency-md-cudnn.log 2>&1
kill $PK; pack; ls -R $W | head -40
