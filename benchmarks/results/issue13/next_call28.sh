#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh), after next_call27.sh: one DiT-XL/2 sample (DDIM 50,
# guidance 4) with the SD-VAE-sized decode on both sides (the bar counts the decode), ours compiled inside our
# CUDA graphs against diffusers' reduce-overhead (bar: >= 3x; call 1: 1.70x ending at latents, ours with bf16
# weights). Ours now runs the pipeline's float32 weights, read by the graphs through bf16 copies (call 1:
# float32 weights cost 29% graphed). Then one spoken digit with cuDNN's algorithm search (--cudnn-benchmark).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w28; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
timeout 300 python3 benchmarks/generation_latency.py --only DiT-XL/2-b1 --runs 5 --warmup 2 \
  --decode --modes compile+graphs reduce-overhead --out $W/latency/dit-b1 > $W/latency-dit.log 2>&1; pack
timeout 250 python3 benchmarks/generation_latency.py --only spoken-digits --runs 5 --warmup 2 --cudnn-benchmark \
  --modes compile+graphs reduce-overhead --out $W/latency/spoken-digits-cudnn > $W/latency-sd-cudnn.log 2>&1
kill $PK; pack; ls -R $W | head -40
