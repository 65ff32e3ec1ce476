#!/bin/bash
# Issue-13 call (same start as call4.sh): the one-clip floors of call 34 again with cuDNN timing its
# convolution algorithms (--cudnn-benchmark): the spoken digit's floor (32.1 ms against its 20.4-ms target)
# is 27.3 ms of convolutions at cuDNN's heuristic pick; is there a faster algorithm for these small shapes?
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=$R/w37; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 150 python3 benchmarks/matmul_floor.py --cudnn-benchmark --only spoken-digits --only moving-digits \
  --target spoken-digits=0.0204 --target moving-digits=0.0748 --out $W/floor-cudnn > $W/floor-cudnn.log 2>&1
tail -8 $W/floor-cudnn.log
