#!/bin/bash
# float8 quality and the recipe path (same start as call4.sh; needs torchao in .whl):
#  1. loss parity over the first 2,000 steps, bf16 against float8 on the same data and seeds, at the width and
#     tokens where float8 paid (2,048 wide, 4,096 tokens: 1.15x tensorwise), 4 blocks and batch 4 so that both
#     runs fit the call (about 0.05 s a step): the bar asks for <= 1%;
#  2. the recipe's --fp8 end to end on moving digits (a video DiT, 40 steps, tensorwise).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 330 python3 benchmarks/fp8_map.py --widths 2048 --tokens 4096 --depth 4 --batch 4 --loss-steps 2000 --loss-recipe tensorwise \
  --out $W/fp8-loss > $W/fp8-loss.log 2>&1; pack
timeout 60 python3 -m multidiff.recipes.data.make_digits_video --out /tmp/digits --num 64 --format gif > $W/fp8-data.log 2>&1
timeout 110 python3 -m multidiff train video --data /tmp/digits --out $W/fp8-run --backbone dit --fp8 tensorwise \
  --steps 40 --log-every 10 --ckpt-every 40 --preview-every 0 > $W/fp8-run.log 2>&1
rm -rf $W/fp8-run/ckpt-* $W/fp8-run/pipeline
kill $PK; pack; ls -R $W | head -40
