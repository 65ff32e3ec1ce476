#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh): DiT-XL/2 training compiled with Inductor's
# autotuning, both sides (--compile-mode max-autotune-no-cudagraphs; bar: >= 1.2x diffusers compiled and >= 65%
# of the ceiling; default mode: 1.06x in call 5, 56.1% in call 10). Call 10's profile left 58.5 ms a step
# outside the matmuls and attention, 12.9 of it the GELU's round trip through memory, which Inductor's Triton
# GEMM templates can take into the first MLP matmul's epilogue where autotuning picks them over cuBLAS; the
# default mode never does. The autotuning (each GEMM shape of the forward and backward, both sides) runs in the
# warm-up, minutes.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w31; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 580 python3 benchmarks/train_throughput.py --only DiT-XL/2 --compile-only \
  --compile-mode max-autotune-no-cudagraphs --steps 10 --warmup 3 --out $W/train-dit-autotune \
  > $W/train-dit-autotune.log 2>&1
kill $PK; pack; ls -R $W | head -20
