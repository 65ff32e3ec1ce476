#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh): where the video U-Net's compiled step with CUDA
# graphs still loses the card (bar: 25% of the ceiling; call 33: 179.0 clips/s, 22.9%, with per-channel
# GroupNorm and cuDNN's algorithm search). Its compiled profile has never finished (call 14: 195 s were
# not enough to compile; the compilations in calls 33 and 36 took 155-226 s), so it gets the whole call:
# the profile of that configuration, op and kernel tables by category.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w38; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 560 python3 benchmarks/profile_steps.py --only video-unet --modes compiled --compile-mode reduce-overhead \
  --variant by_channel_group_norm --cudnn-benchmark --out $W/profile-video-unet-graphs \
  > $W/profile-video-unet-graphs.log 2>&1
kill $PK; pack; ls -R $W | head -20
