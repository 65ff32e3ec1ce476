#!/bin/bash
# Issue-13 call 36 (run inline on the warm machine after call 35; same start as call4.sh): our video U-Net as
# it ships (ATen's group_norm), compiled with CUDA graphs and cuDNN timing its convolution algorithms: the
# same settings as call 33's by_channel_group_norm row, for the A/B. Results in call36/.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/s36 .whl/*.whl && export PYTHONPATH=/tmp/s36:$PWD && ln -sfn $PWD/recipes multidiff/recipes && mkdir -p $OUT/w36 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/w36/card.txt; PYTHONUNBUFFERED=1 timeout 330 python3 benchmarks/train_throughput.py --only Video-UNet --compile-only --compile-mode reduce-overhead --sides ours --cudnn-benchmark --steps 10 --warmup 3 --out $OUT/w36/train-video-graphs-cudnn > $OUT/w36/train-video-graphs-cudnn.log 2>&1; tail -5 $OUT/w36/train-video-graphs-cudnn.log
