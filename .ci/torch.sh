#!/usr/bin/env bash
# The README's suite skips torch's tests when torch is missing, naming it.  Here
# torch==2.13.0 is installed (the CPU build; any other version downloads CUDA
# wheels) and every test file that uses torch runs again: none may skip for
# want of torch now.
set -euo pipefail
python -m pip install --quiet torch==2.13.0
# Lion's peer (tests/test_algos_nadam_radam_adamax_lion.py); --no-deps: it needs only torch
python -m pip install --quiet --no-deps lion-pytorch
python -c "import torch, lion_pytorch; print('torch', torch.__version__, '+ lion-pytorch')"
files=$(grep -l -E 'importorskip\(.torch.\)|^import torch|adaptopt\.torch' tests/test_*.py)
echo "test files that use torch:" $files
log=$(mktemp)
python -m pytest -q -rs -p no:cacheprovider -n auto $files | tee "$log"  # -n: pytest-xdist, one worker per core
if grep -E "^SKIPPED.*(could not import 'torch'|lion-pytorch is not installed)" "$log"; then
  echo "tests skipped for want of torch or lion-pytorch although they are installed" >&2
  exit 1
fi
