#!/bin/bash
# First device call of 2026-12-04 (one H200), three jobs side by side:
# - video: the pixel U-Net in the recipe's default configuration, 6.5 minutes, written in float16 as the
#   bundled moving-digit model;
# - image: the video recipe's optimisation settings (lr 1e-3, 200 warm-up steps, P_mean 0.5) for 6 minutes at
#   batch 128 and at batch 64 (more steps), to see whether the labels are learned with more steps;
# - a small VAE on the frames (for the latent rows of the next call).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; L=/tmp/logs; mkdir -p $R $L
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 5 > $L/gpu.csv 2>&1 &
python3 benchmarks/video_digits.py --out /tmp/vdmk --data /tmp/vd --data-only > $L/data.log 2>&1
python3 -m multidiff.recipes.train_vae --data /tmp/vd/train --out /tmp/vae --size 32 --batch 64 --steps 1500 \
  --preset tiny --lr 2e-4 --workers 4 --save-every 1500 --log-every 100 > $L/vae.log 2>&1 & PV=$!
V="python3 benchmarks/video_digits.py --data /tmp/vd --workers 5 --classifier-minutes 0.6"
$V --out /tmp/vpix --minutes 6.5 --bundle /tmp/moving-digits > $L/vpix.log 2>&1 & P1=$!
I="python3 benchmarks/image_digits.py --data /tmp/vd --minutes 6 --workers 3 --lr 1e-3 --warmup 200 --p-mean 0.5"
$I --out /tmp/img128 > $L/img128.log 2>&1 & P2=$!
$I --out /tmp/img64 --batch 64 > $L/img64.log 2>&1 & P3=$!
wait $PV $P1 $P2 $P3
kill %1
cd /tmp && tar czf $R/moving.tgz moving-digits 2>/dev/null; tar czf $R/vae.tgz vae/pipeline vae/*.json vae/log.jsonl 2>/dev/null
for f in $L/*.log; do tr '\r' '\n' < $f | grep -v "^train:\|^step " > $f.txt; done
tar czf $R/results.tgz logs/*.txt logs/gpu.csv vpix/*.json vpix/*.md vpix/samples.gif \
  img128/*.json img128/*.md img128/samples.png img64/*.json img64/*.md img64/samples.png 2>/dev/null
ls -la $R /tmp/vae
for f in vpix; do echo "== $f"; grep -E "^\| (generated|held|train clips)|Preset" /tmp/$f/video_digits.md | cut -c1-200; done
for f in img128 img64; do echo "== $f"; grep -E "^\| [12]|training" /tmp/$f/image_digits.md; done
tail -3 $L/vae.log.txt
