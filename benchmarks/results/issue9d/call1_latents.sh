#!/bin/bash
# First device call of 2026-12-04 (afternoon session; one H200, nothing else on the card): the two latent rows
# of issue 9. A small VAE on the frames (800 steps), then train_video's U-Net (eager: in call 3 compiling took
# 160 s of a 3-minute budget with a second run on the same CPUs) and DiT (--patch 1, eager) on its latents,
# side by side, 3 minutes of training each, judged as every video row. Per-run limit 470 s (call 3 cut both at
# 320 s while judging). Packed every 45 s and after each stage so that a cut call still returns what finished.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; L=/tmp/logs; mkdir -p $R $L
pack() { cd /tmp; for f in $L/*.log; do tr '\r' '\n' < $f | grep -v "^train:\|^step \|latent cache: *[0-9]" > $f.txt; done
  tar czf $R/.r$BASHPID.tgz logs/*.txt logs/gpu.csv vae/config.json vae/log.jsonl vlat_unet/*.json vlat_unet/*.md \
    vlat_unet/samples.gif vlat_unet/run/log.jsonl vlat_dit/*.json vlat_dit/*.md vlat_dit/samples.gif \
    vlat_dit/run/log.jsonl 2>/dev/null; mv -f $R/.r$BASHPID.tgz $R/results.tgz; cd - > /dev/null; }
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 5 > $L/gpu.csv 2>&1 & PG=$!
(while sleep 45; do pack; done) & PK=$!
python3 benchmarks/video_digits.py --out /tmp/vdmk --data /tmp/vd --data-only > $L/data.log 2>&1
python3 -m multidiff.recipes.train_vae --data /tmp/vd/train --out /tmp/vae --size 32 --batch 64 --steps 800 \
  --preset tiny --lr 2e-4 --workers 8 --save-every 800 --log-every 100 > $L/vae.log 2>&1
pack
V="timeout 470 python3 benchmarks/video_digits.py --data /tmp/vd --workers 4 --classifier-minutes 0.4 --vae /tmp/vae"
($V --out /tmp/vlat_unet --minutes 3 --no-compile > $L/vlat_unet.log 2>&1; pack) & P1=$!
($V --out /tmp/vlat_dit --minutes 3 --backbone dit --patch 1 --no-compile > $L/vlat_dit.log 2>&1; pack) & P2=$!
wait $P1 $P2
kill $PG $PK; pack
for f in vlat_unet vlat_dit; do echo "== $f"; grep -E "^\| (generated|held|train clips)|Preset" /tmp/$f/video_digits.md | cut -c1-250; tail -2 $L/$f.log.txt | cut -c1-300; done
