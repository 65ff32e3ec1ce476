#!/bin/bash
# The last 7 minutes of the session's device time (same start as call4.sh): the U-Nets compiled in
# channels-last, which call 5 did not reach (diffusers' mel U-Net compile ran past its limit); our sides only,
# diffusers' compiled rows are the (31.8 clips/s video) and call 5's.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 110 python3 benchmarks/train_throughput.py --only Mel-UNet-75M --compile-only --variants channels_last \
  --sides ours:channels_last --steps 10 --warmup 3 --out $W/train-mel-cl > $W/train-mel-cl.log 2>&1; pack
timeout 170 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --variants channels_last \
  --sides ours:channels_last ours --steps 10 --warmup 3 --out $W/train-video-cl > $W/train-video-cl.log 2>&1
kill $PK; pack; ls -R $W | head -40
