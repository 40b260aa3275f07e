#!/usr/bin/env bash
# The DeepSpeed ZeRO-Offload recipe (tests/test_distributed_deepspeed.py):
# adaptopt.torch.AdamW as DeepSpeed's client optimizer, ZeRO-2 with
# offload_optimizer: cpu, CPU accelerator, gloo, 2 ranks on loopback, against
# DeepSpeedCPUAdam.  pip builds deepspeed from its sdist and DeepSpeed
# JIT-compiles its CPU ops (shm comm, cpu_adam) with g++ on first use: about
# 5 minutes on 2 cores, hence a step of its own.
set -euo pipefail
python -m pip install --quiet torch==2.13.0 deepspeed
log=$(mktemp)
ADAPTOPT_DIST=1 timeout 1500 python -m pytest -q -rs -p no:cacheprovider \
  tests/test_distributed_deepspeed.py | tee "$log"
if grep -E "^SKIPPED" "$log"; then
  echo "the DeepSpeed tests skipped although deepspeed is installed" >&2
  exit 1
fi
