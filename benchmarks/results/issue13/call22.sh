#!/bin/bash
# Issue-13 device call 22, run 2026-12-04 20:28-20:32 UTC on one H200, 242 s of wall time (same start as call4.sh: the wheels in .whl, carried). The eager
# DiT-XL/2 bar (>= 1.3x diffusers eager; call 13: 1.27x) after what call 15's profile of its step found:
# 24 ms of 238 in stacking the QKV gradients (cat) and copying them to token order, and 14 ms in the
# gated residuals' addcmul forward and its three-pass backward. Now: split_linear (each of q, k, v its own
# GEMM of the packed weight) and gated_residual (one Triton kernel each way).
#  1. the kernels on CUDA against their references (tests/test_fused.py);
#  2. each op alone (fused_ops.py; the gate + residual row is new);
#  3. eager DiT-XL/2 and video DiT-B/2 against diffusers eager, and our plain ops, 20 steps;
#  4. the eager DiT-XL/2 step profiled again (what the two changes took out, and what is left).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w22; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_fused.py -k cuda > $W/tests-cuda.log 2>&1; pack
timeout 80 python3 benchmarks/fused_ops.py --out $W/fused-ops > $W/fused-ops.log 2>&1; pack
timeout 150 python3 benchmarks/train_throughput.py --only DiT-XL/2 VideoDiT-B/2 --no-compile --variants plain_ops \
  --steps 20 --warmup 3 --out $W/train-dit-eager > $W/train-dit-eager.log 2>&1; pack
timeout 100 python3 benchmarks/profile_steps.py --only dit-xl2 --modes eager \
  --out $W/profile-dit-eager > $W/profile-dit-eager.log 2>&1
kill $PK; pack; ls -R $W | head -40
