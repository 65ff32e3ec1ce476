#!/bin/bash
# Next issue-13 device call (not run yet; same start as call4.sh: the wheels in .whl, carried).
#  1. one spoken digit against diffusers doing the same work: its UNet2DModel loop decoded by torchaudio's
#     Griffin-Lim with our vocoder's settings (new side; until call 10 ours with the vocoder faced diffusers
#     ending at mels), ours compiled inside CUDA graphs against diffusers' reduce-overhead (bar: >= 3x);
#  2. the eager DiT-XL/2 step profiled (bar: 1.3x diffusers eager; call 4: 1.25x): where the last 4% are;
#  3. the mel U-Net's compiled step profiled (bar: 40% of the ceiling; calls 5, 10, 12: 34%, GPU-bound).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w13; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 200 python3 benchmarks/generation_latency.py --only spoken-digits --runs 5 --warmup 2 \
  --modes compile+graphs reduce-overhead --out $W/latency/spoken-digits > $W/latency-sd.log 2>&1; pack
timeout 120 python3 benchmarks/profile_steps.py --only dit-xl2 --modes eager \
  --out $W/profile-dit-eager > $W/profile-dit-eager.log 2>&1; pack
timeout 200 python3 benchmarks/profile_steps.py --only mel-unet --modes compiled \
  --out $W/profile-mel-compiled > $W/profile-mel-compiled.log 2>&1
kill $PK; pack; ls -R $W | head -40
