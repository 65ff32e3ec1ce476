#!/bin/bash
# Next issue-13 call (not run yet; same start as call4.sh: the wheels in .whl, carried). The one-clip bar
# (>= 3x diffusers' compiled loop), first of three calls (next_call27.sh: the moving digit; next_call28.sh: the DiT):
#  1. tests/test_graphs.py on CUDA: graphed audio equals eager and the vocoder replays; the replays read bf16
#     copies of the float32 linear and convolution weights, equal to eager bit for bit, also after an
#     in-place update;
#  2. the floor of each case (benchmarks/matmul_floor.py): its matmuls, convolutions and attention alone in
#     one CUDA graph, 32-50 steps, against 1/3 of diffusers' best compiled loop as measured (DiT-XL/2
#     0.1901 s, call 1; spoken digit with Griffin-Lim 0.0611 s, call 13; moving digit 0.2243 s, call 2);
#     beside the whole forward, eager kernels and compiled, in the same graph;
#  3. one spoken digit, the pipeline as users get it (float32 weights): the vocoder is now replayed from a
#     CUDA graph (call 13: 0.0426 s against 0.0611, 1.43x; Griffin-Lim was 10.5 ms of it, eager), and the
#     graphs read bf16 copies of the weights instead of casting each at every step (176 of the mel U-Net's
#     227 parameters; for the moving digit, bf16 weights gained nothing measurable in call 8).
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w26; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 20; do pack; done) & PK=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt 2>&1
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_graphs.py > $W/tests-graphs.log 2>&1; pack
timeout 250 python3 benchmarks/matmul_floor.py --compile --target DiT-XL/2-b1=0.0634 \
  --target spoken-digits=0.0204 --target moving-digits=0.0748 --out $W/floor > $W/floor.log 2>&1; pack
timeout 250 python3 benchmarks/generation_latency.py --only spoken-digits --runs 5 --warmup 2 \
  --modes compile+graphs graphs reduce-overhead --out $W/latency/spoken-digits > $W/latency-sd.log 2>&1
kill $PK; pack; ls -R $W | head -40
