#!/bin/bash
# The third call (same start): where the bars' remaining gaps are, profiled: the eager DiT-XL/2 step (bar:
# 1.3x diffusers eager) and the compiled mel U-Net step (bar: 40% of the ceiling; calls 5, 10, 12: 34%,
# GPU-bound); then the video DiT-B/2 compiled against Latte-equal-work diffusers (bar: >= 1.2x; never reached).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w15; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 120 python3 benchmarks/profile_steps.py --only dit-xl2 --modes eager \
  --out $W/profile-dit-eager > $W/profile-dit-eager.log 2>&1; pack
timeout 190 python3 benchmarks/profile_steps.py --only mel-unet --modes compiled \
  --out $W/profile-mel-compiled > $W/profile-mel-compiled.log 2>&1; pack
timeout 230 python3 benchmarks/train_throughput.py --only VideoDiT-B/2 --compile-only --steps 10 --warmup 3 \
  --out $W/train-videodit-compiled > $W/train-videodit-compiled.log 2>&1
kill $PK; pack; ls -R $W | head -40
