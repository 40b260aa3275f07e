#!/usr/bin/env bash
# The README's suite skips torch's tests when torch is missing, naming it.  Here
# torch==2.13.0 is installed (the CPU build; any other version downloads CUDA
# wheels) and every test file that uses torch runs again: none may skip for
# want of torch now.
set -euo pipefail
python -m pip install --quiet torch==2.13.0
python -c "import torch; print('torch', torch.__version__)"
files=$(grep -l -E 'importorskip\(.torch.\)|^import torch|adaptopt\.torch' tests/test_*.py)
echo "test files that use torch:" $files
log=$(mktemp)
python -m pytest -q -rs -p no:cacheprovider $files | tee "$log"
if grep -E "^SKIPPED.*could not import 'torch'" "$log"; then
  echo "tests skipped for want of torch although torch is installed" >&2
  exit 1
fi
