#!/bin/bash
# Second issue-13 device call of 2026-12-04 (one H200, nothing else on the card). Packed as it goes.
#  1. the U-Net profiles (call 1 stopped at torch 2.11's FunctionEvent having no activity_type; fixed);
#  2. DiT-XL/2 batch 1 with multidiff's backbone in bf16 weights (graphs, compile+graphs) against diffusers'
#     reduce-overhead; the moving-digit U-Net's compile+graphs (call 1's 110 s cut it before that mode);
#  3. the float8 map where it is most likely to pay: widths 2048 and 4096 at 4,096 tokens.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
timeout 130 python3 benchmarks/profile_steps.py --only video-unet --only mel-unet --sides multidiff diffusers \
  --modes eager compiled --out $W/profile > $W/profile.log 2>&1; pack
timeout 150 python3 benchmarks/generation_latency.py --only DiT-XL/2-b1 --runs 5 --warmup 2 --ours-bf16 \
  --modes graphs compile+graphs reduce-overhead --out $W/latency/DiT-XL-2-b1-bf16 > $W/latency-dit-bf16.log 2>&1; pack
timeout 100 python3 benchmarks/generation_latency.py --only moving-digits --runs 5 --warmup 2 \
  --modes compile+graphs graphs reduce-overhead --out $W/latency/moving-digits > $W/latency-md.log 2>&1; pack
timeout 170 python3 benchmarks/fp8_map.py --widths 2048 4096 --tokens 4096 --out $W/fp8 > $W/fp8.log 2>&1; pack
ls -R $W | head -40
