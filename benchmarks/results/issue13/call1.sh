#!/bin/bash
# First issue-13 device call of 2026-12-04, afternoon (one H200, nothing else on the card).
# Carry .whl with torchao added (`bash ../shared/device/wheels.sh torchao==0.18.0`). Every stage writes into
# $OUT as one archive as it finishes (at most 8 files come back), so a call cut at its limit returns what ran.
# Worst case 550 s of stages.
#  1. generation latency against diffusers' own loops, one case per command (compile start-up included in the
#     stage, not in the timing);
#  2. where the U-Nets lose the card: the profile of one training step, eager and compiled, both sides;
#  3. the float8 map at the widths of DiT-B, DiT-XL and beyond, at 256 and 4,096 tokens.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
for c in DiT-XL/2-b1 spoken-digits moving-digits; do  # the cases the 3x bar names; compiles are cut first
  timeout 110 python3 benchmarks/generation_latency.py --only $c --runs 5 --warmup 2 \
    --modes eager graphs reduce-overhead compile+graphs compile --out $W/latency/${c//\//-} > $W/latency-${c//\//-}.log 2>&1; pack
done
timeout 120 python3 benchmarks/profile_steps.py --only video-unet --only mel-unet --sides multidiff diffusers \
  --modes eager compiled --out $W/profile > $W/profile.log 2>&1; pack
timeout 100 python3 benchmarks/fp8_map.py --widths 768 1152 2048 --tokens 256 4096 --out $W/fp8 > $W/fp8.log 2>&1; pack
ls -R $W | head -40
