#!/bin/bash
# Call 11 (typed as one command, on the machine call 10 left warm; same start as call 10, its wheels in
# /tmp/s10): the float8 profile that call 10's 170-s stage cut, given 380 s. Its compile took most of it.
set -u
export PYTHONUNBUFFERED=1
mkdir -p /tmp/w11
timeout 380 python3 benchmarks/profile_steps.py --only dit-xl2 --modes compiled --variant fp8_tensorwise \
  --out /tmp/w11/profile-dit-fp8 > /tmp/w11/profile-dit-fp8.log 2>&1
tar czf $OUT/results.tgz -C /tmp/w11 .
