#!/bin/bash
# Issue-13 device call 18 (same start as call4.sh): the adaLN backward's parts timed alone at DiT-XL/2's
# shape (ln_bwd_parts.py; call 17: fused forward + backward 0.82x PyTorch's), and eager DiT-XL/2 against
# diffusers again (call 13: 1.27x, old backward; call 17: 1.25x, this one), for the run-to-run spread.
set -u
export PYTHONUNBUFFERED=1
R=${OUT:-/tmp/out}; W=/tmp/w18; mkdir -p $R $W
pack() { tar czf $R/.r.tgz -C $W . && mv -f $R/.r.tgz $R/results.tgz; }
(while sleep 15; do pack; done) & PK=$!
timeout 45 python3 benchmarks/results/issue13/ln_bwd_parts.py > $W/ln-bwd-parts.jsonl 2> $W/ln-bwd-parts.log; pack
timeout 80 python3 benchmarks/train_throughput.py --only DiT-XL/2 --no-compile \
  --steps 10 --warmup 3 --out $W/train-dit-eager > $W/train-dit-eager.log 2>&1
kill $PK; pack; ls -R $W | head -20
