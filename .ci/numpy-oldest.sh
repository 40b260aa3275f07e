#!/usr/bin/env bash
# The test suite under the oldest NumPy the package declares (pyproject.toml's
# "numpy>=X" is read here, so the floor and what is tested cannot drift apart).
set -euo pipefail
floor=$(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(m.group(1) for d in deps if (m := re.fullmatch(r"numpy>=([0-9.]+)", d))))
PY
)
echo "pyproject.toml declares numpy>=$floor"
python3 -m venv .venv-ci-numpy-oldest
. .venv-ci-numpy-oldest/bin/activate
python -m pip install --quiet "numpy==$floor" ".[test]"
python - "$floor" <<'PY'
import sys
import numpy
from packaging.version import Version
print("numpy", numpy.__version__)
assert Version(numpy.__version__) == Version(sys.argv[1]), numpy.__version__
PY
python -m pytest -q -p no:cacheprovider --ignore=tests/test_avx512_emulated.py  # the emulator test does not use NumPy
