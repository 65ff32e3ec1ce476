#!/bin/bash
# float8's measured reason (same start as call4.sh; needs torchao in .whl): the compiled DiT-XL/2 step
# profiled in bf16 and with the recipes' float8 (tensorwise), so that the time the float8 matmuls save and the
# time their scaling and casts add are both on the record (fp8_map: 0.83-0.94x at widths 768-1,152), then the
# video DiT-B/2 (16x256 tokens, width 768) compiled in float8 beside bf16, the realistic configuration with the
# most tokens.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 150 python3 benchmarks/profile_steps.py --only dit-xl2 --modes compiled \
  --out $W/profile-dit-bf16 > $W/profile-dit-bf16.log 2>&1; pack
timeout 170 python3 benchmarks/profile_steps.py --only dit-xl2 --modes compiled --variant fp8_tensorwise \
  --out $W/profile-dit-fp8 > $W/profile-dit-fp8.log 2>&1; pack
timeout 250 python3 benchmarks/train_throughput.py --only VideoDiT-B/2 --compile-only --variants fp8_tensorwise \
  --sides ours ours:fp8_tensorwise --steps 10 --warmup 3 --out $W/train-videodit-fp8 > $W/train-videodit-fp8.log 2>&1
kill $PK; pack; ls -R $W | head -40
