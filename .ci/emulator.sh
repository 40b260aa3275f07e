#!/usr/bin/env bash
# The avx512 kernels executed on a CPU emulated by bochs, bit for bit against
# the scalar kernels (tests/test_avx512_emulated.py; tools/avx512_bochs/).
# Debian's bochs and a boot loader are installed first.  Best effort: where
# they cannot be installed, the test skips naming what is missing, and this
# step says so loudly.
set -euo pipefail
missing() { python -c "import sys; sys.path.insert(0, 'tools/avx512_bochs'); import run; print(' '.join(run.missing()))"; }
if [ -z "$(missing)" ]; then
  # then the README's test suite (step 2) has already run the emulated test
  echo "bochs and its boot files were installed already: tests/test_avx512_emulated.py ran in the README's test suite above"
  exit 0
fi
EMU="bochs bochs-term bochsbios vgabios isolinux syslinux-common genisoimage"  # bochs-term: bochs needs a GUI package, this is the small one
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -q $EMU >/dev/null 2>&1 \
    || { timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q $EMU >/dev/null 2>&1; } \
    || echo "WARNING: could not install $EMU: the emulated AVX-512 test will skip" >&2
fi
python -m pytest -q -rs -p no:cacheprovider tests/test_avx512_emulated.py
