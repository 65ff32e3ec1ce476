#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh: the wheels in .whl, carried). The two compiled
# bars without a figure or a profile: the video DiT-B/2 compiled against Latte-equal-work diffusers, side by
# side (bar: >= 1.2x; never reached: its compilations outlasted 200-s stages), and where the video U-Net's
# compiled step with CUDA graphs still loses the card (bar: 25% of the ceiling; call 23: 21.8% with
# Inductor's layout optimisation forced, which UNet.compile now does; its compiled profile never finished
# in 195 s, call 14).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w25; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 330 python3 benchmarks/train_throughput.py --only VideoDiT-B/2 --compile-only --steps 10 --warmup 3 \
  --out $W/train-videodit-compiled > $W/train-videodit-compiled.log 2>&1; pack
timeout 240 python3 benchmarks/profile_steps.py --only video-unet --modes compiled --compile-mode reduce-overhead \
  --out $W/profile-video-unet-graphs > $W/profile-video-unet-graphs.log 2>&1
kill $PK; pack; ls -R $W | head -40
