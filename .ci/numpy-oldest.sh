#!/usr/bin/env bash
# The test suite under the oldest NumPy the package declares (pyproject.toml's
# "numpy>=X" is read here, so the floor and what is tested cannot drift apart).
# The CI venv's adaptopt, built against the newest NumPy as every wheel is, is
# run with numpy==X swapped in (no rebuild), and the newer NumPy put back.
set -euo pipefail
floor=$(python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(m.group(1) for d in deps if (m := re.fullmatch(r"numpy>=([0-9.]+)", d))))
PY
)
before=$(python -c "import numpy; print(numpy.__version__)")
echo "pyproject.toml declares numpy>=$floor; the CI venv has numpy $before"
trap 'python -m pip install --quiet "numpy==$before"' EXIT
python -m pip install --quiet "numpy==$floor"
python - "$floor" <<'PY'
import sys
import numpy
from packaging.version import Version
print("testing with numpy", numpy.__version__)
assert Version(numpy.__version__) == Version(sys.argv[1]), numpy.__version__
PY
# what NumPy's arithmetic decides: the reference against the kernels (every
# algorithm), validation, state_dict; the rest does not depend on NumPy's version
python -m pytest -q -p no:cacheprovider -n auto tests/test_parity.py tests/test_algos_nadam_radam_adamax_lion.py \
  tests/test_algos_adadelta_rprop_asgd_adafactor.py tests/test_validation.py tests/test_state_dict.py
