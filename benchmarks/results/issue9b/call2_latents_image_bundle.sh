#!/bin/bash
# Second device call of 2026-12-04 (one H200), side by side:
# - a small VAE on the frames (1,500 steps), then the U-Net and the DiT of train_video on its latents;
# - image: lr 5e-4 (lr 1e-3 ran into non-finite gradients after ~1,400 steps in call 1), P_mean 0.5,
#   200 warm-up steps, at batch 128 and 64;
# - the moving-digit model of call 1 (float16, as bundled) judged at its own guidance (1.5).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; L=/tmp/logs; mkdir -p $R $L
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 5 > $L/gpu.csv 2>&1 &
python3 benchmarks/video_digits.py --out /tmp/vdmk --data /tmp/vd --data-only > $L/data.log 2>&1
python3 -m multidiff.recipes.train_vae --data /tmp/vd/train --out /tmp/vae --size 32 --batch 64 --steps 1500 \
  --preset tiny --lr 2e-4 --workers 4 --save-every 1500 --log-every 100 > $L/vae.log 2>&1 & PV=$!
I="python3 benchmarks/image_digits.py --data /tmp/vd --minutes 6.5 --workers 3 --lr 5e-4 --warmup 200 --p-mean 0.5"
$I --out /tmp/img128 > $L/img128.log 2>&1 & P2=$!
$I --out /tmp/img64 --batch 64 > $L/img64.log 2>&1 & P3=$!
V="python3 benchmarks/video_digits.py --data /tmp/vd --workers 4 --classifier-minutes 0.6"
$V --out /tmp/vbundle --pipeline .bench/moving-digits > $L/vbundle.log 2>&1
wait $PV
$V --out /tmp/vlat_unet --minutes 6 --vae /tmp/vae > $L/vlat_unet.log 2>&1 & P6=$!
$V --out /tmp/vlat_dit --minutes 6 --vae /tmp/vae --backbone dit --patch 1 --no-compile > $L/vlat_dit.log 2>&1 & P7=$!
wait $P2 $P3 $P6 $P7
kill %1
cd /tmp
for f in $L/*.log; do tr '\r' '\n' < $f | grep -v "^train:\|^step " > $f.txt; done
tar czf $R/results.tgz logs/*.txt logs/gpu.csv vae/config.json vae/log.jsonl vbundle/*.json vbundle/*.md \
  vlat_unet/*.json vlat_unet/*.md vlat_unet/samples.gif vlat_dit/*.json vlat_dit/*.md vlat_dit/samples.gif \
  img128/*.json img128/*.md img128/samples.png img64/*.json img64/*.md img64/samples.png 2>/dev/null
ls -la $R
for f in vbundle vlat_unet vlat_dit; do echo "== $f"; grep -E "^\| (generated|held|train clips)|Preset|Pipeline" /tmp/$f/video_digits.md | cut -c1-200; done
for f in img128 img64; do echo "== $f"; grep -E "^\| [12]|training" /tmp/$f/image_digits.md; tail -2 $L/$f.log.txt | cut -c1-300; done
