#!/usr/bin/env bash
# The multi-process tests: FSDP2 and DDP/ZeRO over gloo (2 ranks), the NumPy
# ShardedOptimizer under mpirun -n 2 and -n 4, and the killed-rank faults;
# loopback only, each launch under a timeout.  Open MPI from Debian, mpi4py
# from PyPI (built against it).  About 2 minutes on 2 cores.
set -euo pipefail
if ! command -v mpirun >/dev/null; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev
fi
python -m pip install --quiet torch==2.13.0 $(python .ci/extra-reqs.py mpi)
python -c "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"
log=$(mktemp)
# (tests/test_distributed_deepspeed.py runs from .ci/deepspeed.sh)
ADAPTOPT_DIST=1 timeout 600 python -m pytest -q -rs -p no:cacheprovider \
  tests/test_distributed_fsdp.py tests/test_distributed_ddp.py tests/test_distributed_mpi.py \
  | tee "$log"
if grep -E "^SKIPPED" "$log"; then
  echo "distributed tests skipped although torch, mpi4py and mpirun are installed" >&2
  exit 1
fi
