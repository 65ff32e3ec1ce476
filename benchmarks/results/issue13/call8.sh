#!/bin/bash
# Issue-13 device call 8 (same start as call4.sh). Compiles take 30-90 s each on a fresh
# machine (call 5) and the video U-Net's more than 170 s (call 7), so each stage's limit allows for them;
# a machine kept warm between calls keeps Inductor's cache in /tmp.
#  1. the kernels on CUDA (tests/test_fused.py, with the LayerNorm kernels' new row tiles);
#  2. each op alone (fused_ops.py): the LayerNorm tiles against the one-row tiles of call 4, and the
#     GroupNorm rows call 4 did not reach;
#  3. eager DiT-XL/2 and video DiT-B/2 with and without the fused kernels (bar: >= 1.3x diffusers eager;
#     call 4: 1.25x and 1.42x);
#  4. one moving digit with bf16 weights, compiled inside our CUDA graphs, against diffusers' reduce-overhead
#     (bar: >= 3x; call 2: 2.87x with fp32 weights; calls 3 and 5 ended in diffusers' compile at 60 s).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w8; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/test_fused.py -k cuda > $W/tests-cuda.log 2>&1; pack
timeout 80 python3 benchmarks/fused_ops.py --out $W/fused-ops > $W/fused-ops.log 2>&1; pack
timeout 120 python3 benchmarks/train_throughput.py --only DiT-XL/2 VideoDiT-B/2 --no-compile --variants plain_ops \
  --steps 10 --warmup 3 --out $W/train-dit-eager > $W/train-dit-eager.log 2>&1; pack
timeout 170 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 --ours-bf16 \
  --modes compile+graphs reduce-overhead --out $W/latency/moving-digits-bf16 > $W/latency-md-bf16.log 2>&1
kill $PK; pack; ls -R $W | head -40
