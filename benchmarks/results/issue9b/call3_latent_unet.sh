#!/bin/bash
# Third device call of 2026-12-04 (one H200, the session's last 5 minutes): the latent U-Net row, alone on the
# card: a small VAE on the frames (1,000 steps), then train_video's U-Net on its latents, eager (no compile
# start-up in so short a budget), 2.2 minutes, judged as every video row.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; L=/tmp/logs; mkdir -p $R $L
python3 benchmarks/video_digits.py --out /tmp/vdmk --data /tmp/vd --data-only > $L/data.log 2>&1
python3 -m multidiff.recipes.train_vae --data /tmp/vd/train --out /tmp/vae --size 32 --batch 64 --steps 1000 \
  --preset tiny --lr 2e-4 --workers 8 --save-every 1000 --log-every 100 > $L/vae.log 2>&1
timeout 200 python3 benchmarks/video_digits.py --data /tmp/vd --workers 8 --classifier-minutes 0.4 \
  --out /tmp/vlat_unet --minutes 2.2 --vae /tmp/vae --no-compile > $L/vlat_unet.log 2>&1
cd /tmp; for f in $L/*.log; do tr '\r' '\n' < $f | grep -v "^train:\|^step \|latent cache: *[0-9]" > $f.txt; done
tar czf $R/results.tgz logs/*.txt vae/config.json vae/log.jsonl vlat_unet/*.json vlat_unet/*.md vlat_unet/samples.gif vlat_unet/run/log.jsonl 2>/dev/null
grep -E "^\| (generated|held|train clips)|Preset" /tmp/vlat_unet/video_digits.md | cut -c1-250; tail -3 $L/vlat_unet.log.txt | cut -c1-300
