#!/usr/bin/env bash
# A build without OpenMP (ADAPTOPT_OPENMP=OFF), in its own venv and build
# directory: show_config() must say so, and the parity tests must pass.
set -euo pipefail
python3 -m venv .venv-ci-openmp-off
. .venv-ci-openmp-off/bin/activate
ADAPTOPT_OPENMP=OFF python -m pip install --quiet -C build-dir=build/openmp-off ".[test]"
python - <<'PY'
import adaptopt
cfg = adaptopt.show_config(mode="dicts")
print("openmp:", cfg["openmp"], "| num_threads:", cfg["num_threads"], "| flags:", cfg["flags"])
assert cfg["openmp"] is False, "ADAPTOPT_OPENMP=OFF built with OpenMP"
assert cfg["num_threads"] == 1 and adaptopt.get_num_threads() == 1
assert "openmp" not in cfg["flags"].lower(), cfg["flags"]
PY
python -m adaptopt info | grep -E '^ +OpenMP +no'
python -m pytest -q -p no:cacheprovider -n auto tests/test_parity.py tests/test_threads.py tests/test_config.py
