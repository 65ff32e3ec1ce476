#!/bin/bash
# Third device call of 2026-12-03/04 (one H200): everything left, side by side on the one card.
# - image: the small preset's generic training settings (lr 2e-4, 1,000 warm-up steps) against the video
#   recipe's (lr 1e-3, 200), at P_mean -1.2 and 0.5;
# - audio: the compact preset (4.7M) on two seeds, 3.5 minutes each after a 3-step run warms the compile cache;
# - video: a small VAE trained on the frames, then the U-Net and the DiT on its latents; the pixel U-Net again,
#   written in float16 as the bundled moving-digit model.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; L=/tmp/logs; mkdir -p $R $L
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 5 > $L/gpu.csv 2>&1 &
python3 benchmarks/video_digits.py --out /tmp/vdmk --data /tmp/vd --data-only > $L/data.log 2>&1
python3 -m multidiff.recipes.train_vae --data /tmp/vd/train --out /tmp/vae --size 32 --batch 64 --steps 1500 \
  --preset tiny --lr 2e-4 --workers 6 --save-every 1500 --log-every 100 > $L/vae.log 2>&1 & PV=$!
V="python3 benchmarks/video_digits.py --data /tmp/vd --workers 4 --classifier-minutes 0.6"
$V --out /tmp/vpix --minutes 6 --bundle /tmp/moving-digits > $L/vpix.log 2>&1 & P1=$!
I="python3 benchmarks/image_digits.py --data /tmp/vd --minutes 3.5 --workers 3"
$I --out /tmp/img_lr --lr 1e-3 --warmup 200 > $L/img_lr.log 2>&1 & P2=$!
$I --out /tmp/img_lr_p05 --lr 1e-3 --warmup 200 --p-mean 0.5 > $L/img_lr_p05.log 2>&1 & P3=$!
python3 -m multidiff.recipes.train_audio --data .bench/speech/train --out /tmp/warm --preset compact --labels \
  --seconds 1.0 --batch 64 --steps 3 --warmup 200 --workers 4 --preview-every 0 > $L/warm.log 2>&1
A="python3 benchmarks/audio_speech.py --data .bench/speech --minutes 3.5 --workers 4 --preset compact --p-mean -0.4"
$A --out /tmp/c0 --seed 0 > $L/c0.log 2>&1 & P4=$!
$A --out /tmp/c1 --seed 1 > $L/c1.log 2>&1 & P5=$!
wait $PV
$V --out /tmp/vlat_unet --minutes 4.5 --vae /tmp/vae > $L/vlat_unet.log 2>&1 & P6=$!
$V --out /tmp/vlat_dit --minutes 4.5 --vae /tmp/vae --backbone dit --patch 1 --no-compile > $L/vlat_dit.log 2>&1 & P7=$!
wait $P1 $P2 $P3 $P4 $P5 $P6 $P7
kill %1
cd /tmp && tar czf $R/moving.tgz moving-digits 2>/dev/null
for f in $L/*.log; do tr '\r' '\n' < $f | grep -v "^train:\|^step " > $f.txt; done
tar czf $R/results.tgz logs/*.txt logs/gpu.csv vae/log.jsonl vpix/*.json vpix/*.md vpix/samples.gif \
  vlat_unet/*.json vlat_unet/*.md vlat_unet/samples.gif vlat_dit/*.json vlat_dit/*.md vlat_dit/samples.gif \
  img_lr/*.json img_lr/*.md img_lr/samples.png img_lr_p05/*.json img_lr_p05/*.md img_lr_p05/samples.png \
  c0/*.json c0/*.md c1/*.json c1/*.md 2>/dev/null
ls -la $R
for f in vpix vlat_unet vlat_dit; do echo "== $f"; grep -E "^\| (generated|held|train clips)|Preset" /tmp/$f/video_digits.md | cut -c1-200; done
for f in img_lr img_lr_p05; do echo "== $f"; grep -E "^\| [12]|training" /tmp/$f/image_digits.md; done
for f in c0 c1; do echo "== $f"; grep -E "^\| generated|Preset" /tmp/$f/audio_speech.md | cut -c1-200; done
