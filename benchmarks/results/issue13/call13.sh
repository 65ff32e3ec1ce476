#!/bin/bash
# Issue-13 device call 13, run 2026-12-04 19:08-19:12 UTC on one H200 (same start as call4.sh: the wheels in .whl, carried).
#  1. the kernels on CUDA, every setting the LayerNorm kernels' autotuners may pick (tests/test_fused.py);
#  2. each op alone (fused_ops.py), with the settings the autotuners picked and the times they compared
#     (call 8, fixed settings: forward 0.81 TB/s, forward+backward 0.92x PyTorch's);
#  3. eager DiT-XL/2 and video DiT-B/2 against diffusers eager (bar: >= 1.3x; call 4: 1.25x and 1.42x);
#  4. one spoken digit against diffusers doing the same work: its UNet2DModel loop decoded by torchaudio's
#     Griffin-Lim at our vocoder's settings (new side; until now ours with the vocoder faced diffusers
#     ending at mels), ours compiled inside CUDA graphs against diffusers' reduce-overhead (bar: >= 3x).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w13; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_fused.py -k cuda > $W/tests-cuda.log 2>&1; pack
timeout 80 python3 benchmarks/fused_ops.py --out $W/fused-ops > $W/fused-ops.log 2>&1; pack
timeout 120 python3 benchmarks/train_throughput.py --only DiT-XL/2 VideoDiT-B/2 --no-compile --variants plain_ops \
  --steps 10 --warmup 3 --out $W/train-dit-eager > $W/train-dit-eager.log 2>&1; pack
timeout 200 python3 benchmarks/generation_latency.py --only spoken-digits --runs 5 --warmup 2 \
  --modes compile+graphs reduce-overhead --out $W/latency/spoken-digits > $W/latency-sd.log 2>&1
kill $PK; pack; ls -R $W | head -40
