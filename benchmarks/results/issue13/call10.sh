#!/bin/bash
# Call 10 (same start): the mel U-Net compiled with CUDA graphs, NCHW and channels-last (bar: >= 40%
# of the ceiling; call 5: 34%), then float8's measured reason (from call11.sh, not run): the compiled
# DiT-XL/2 step profiled in bf16 and with the recipes' float8 (tensorwise), for the time the float8 matmuls
# save against the time their scaling and casts add (fp8_map: 0.83-0.94x at widths 768-1,152).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w10; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 220 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --compile-mode reduce-overhead \
  --variants channels_last --sides ours ours:channels_last --steps 10 --warmup 3 \
  --out $W/train-mel-graphs > $W/train-mel-graphs.log 2>&1; pack
timeout 150 python3 benchmarks/profile_steps.py --only dit-xl2 --modes compiled \
  --out $W/profile-dit-bf16 > $W/profile-dit-bf16.log 2>&1; pack
timeout 170 python3 benchmarks/profile_steps.py --only dit-xl2 --modes compiled --variant fp8_tensorwise \
  --out $W/profile-dit-fp8 > $W/profile-dit-fp8.log 2>&1
kill $PK; pack; ls -R $W | head -40
