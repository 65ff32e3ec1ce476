#!/bin/bash
# Issue-13 device call 4 (run 2026-12-04 16:35 UTC). One H200; carry .whl (`bash ../shared/device/wheels.sh
# torchao==0.18.0` adds torchao to diffusers, soundfile, librosa) and start the command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/s4 .whl/*.whl \
#     && export PYTHONPATH=/tmp/s4:$PWD && ln -sfn $PWD/recipes multidiff/recipes && bash <this file>
# Packed every 20 s and after each stage, so a cut call returns what ran.
#  1. the fused Triton kernels compiled on CUDA against the plain ops (tests/test_fused.py's CUDA test), then
#     each op alone against its plain ops at the bar's shapes (benchmarks/fused_ops.py: the per-op gain);
#  2. eager training, every case with its variants: DiT-XL/2 and VideoDiT-B/2 with and without the fused
#     kernels and with cuDNN or flash SDPA first; the video and mel U-Nets with and without the fused
#     GroupNorm, NCHW and channels-last (the bar's eager row: >= 1.3x diffusers eager for the DiTs);
#  3. the video U-Net's eager profile, fused channels-last (where the 19% copy/layout and 19% norm of
#     call 2's profile went);
#  4. one spoken digit with the sync-free Griffin-Lim.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_fused.py tests/test_graphs.py > $W/tests-cuda.log 2>&1; pack
timeout 60 python3 benchmarks/fused_ops.py --out $W/fused-ops > $W/fused-ops.log 2>&1; pack
timeout 260 python3 benchmarks/train_throughput.py --only DiT-XL/2 VideoDiT-B/2 Video-UNet Mel-UNet-75M \
  --no-compile --variants plain_ops sdpa_cudnn sdpa_flash channels_last channels_last_plain \
  --steps 10 --warmup 3 --out $W/train-eager > $W/train-eager.log 2>&1; pack
timeout 70 python3 benchmarks/profile_steps.py --only video-unet --modes eager --variant channels_last \
  --out $W/profile-cl > $W/profile-cl.log 2>&1; pack
timeout 90 python3 benchmarks/generation_latency.py --only spoken-digits --runs 5 --warmup 2 \
  --modes graphs compile+graphs reduce-overhead --out $W/latency/spoken-digits > $W/latency-sd.log 2>&1
kill $PK; pack; ls -R $W | head -40
