#!/bin/bash
# Ready for the next session's first issue-13 device call (one H200, nothing else on the card; not run yet).
# Carry .whl with torchao (`bash ../shared/device/wheels.sh torchao==0.18.0`). Packed every 20 s and after each
# stage (generation_latency and train_throughput write after every row), so a cut call returns what ran.
#  1. moving-digits and spoken-digits with bf16 weights (`Pipeline.to(dtype=torch.bfloat16)`), compile+graphs
#     first: the video case is at 2.87x in fp32 weights, the bar 3x;
#  2. the bar's training rows, never measured on the H200 in this issue: DiT-XL/2 and VideoDiT-B/2 against
#     diffusers, eager and compiled;
#  3. the U-Net profiles, eager only (the compiled rows cut call 2 at 130 s);
#  4. the recipe's --fp8 path end to end (a video DiT, 40 steps, tensorwise), which the CPU can only refuse.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
for c in moving-digits spoken-digits; do
  timeout 100 python3 benchmarks/generation_latency.py --only $c --runs 5 --warmup 2 --ours-bf16 \
    --modes compile+graphs reduce-overhead graphs --out $W/latency/$c-bf16 > $W/latency-$c-bf16.log 2>&1
done
timeout 200 python3 benchmarks/train_throughput.py --only DiT-XL/2 VideoDiT-B/2 --steps 10 --warmup 3 \
  --out $W/train > $W/train.log 2>&1
timeout 120 python3 benchmarks/profile_steps.py --only video-unet --only mel-unet --sides multidiff diffusers \
  --modes eager --out $W/profile > $W/profile.log 2>&1
timeout 100 python3 -m multidiff.recipes.data.make_digits_video --out /tmp/digits --num 200 --format gif > $W/fp8-data.log 2>&1
timeout 150 python3 -m multidiff train video --data /tmp/digits --out $W/fp8-run --backbone dit --fp8 tensorwise \
  --steps 40 --log-every 10 --ckpt-every 40 --preview-every 0 > $W/fp8-run.log 2>&1
rm -rf $W/fp8-run/ckpt-* $W/fp8-run/pipeline
kill $PK; pack; ls -R $W | head -40
