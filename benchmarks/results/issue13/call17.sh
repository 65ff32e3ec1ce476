#!/bin/bash
# Issue-13 device call 17, run 2026-12-04 19:37-19:39 UTC (same start; its backward was reverted after it). The adaLN LayerNorm
# backward rebuilt after call 13 (fused forward + backward 0.70x PyTorch's): a column-tile Triton kernel
# (dx̂ = dy·(1 + scale) and the partial sums of dy·x̂ and dy) and ATen's LayerNorm backward for dx.
#  1. eager DiT-XL/2 and video DiT-B/2 against diffusers eager (bar: >= 1.3x; call 13: 1.27x and 1.42x);
#  2. each op alone (fused_ops.py);
#  3. the kernels on CUDA against the reference (tests/test_fused.py).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w17; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 110 python3 benchmarks/train_throughput.py --only DiT-XL/2 VideoDiT-B/2 --no-compile \
  --steps 10 --warmup 3 --out $W/train-dit-eager > $W/train-dit-eager.log 2>&1; pack
timeout 60 python3 benchmarks/fused_ops.py --out $W/fused-ops > $W/fused-ops.log 2>&1; pack
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_fused.py -k cuda > $W/tests-cuda.log 2>&1
kill $PK; pack; ls -R $W | head -40
