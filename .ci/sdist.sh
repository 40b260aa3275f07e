#!/usr/bin/env bash
# CI step "sdist": `python -m build --sdist`, then `pip install` of that
# sdist (built from source by pip, in its isolated build environment) into a
# fresh venv, and the sdist's own tests run against it from outside any
# source tree.  Self-contained (a clean clone, a C compiler, network to
# PyPI).  About 4 minutes on the 2-core machine (sdist 10 s, the build from
# it 1-2 min, tests 2 min); every phase is bounded by a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/adaptopt-sdist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step() { echo; echo "=== sdist.sh: $* ($(date +%T))"; }

step "python -m build --sdist"
"$PY" -m venv "$WORK/tools"
timeout 300 "$WORK/tools/bin/python" -m pip install --quiet --upgrade pip build
timeout 600 "$WORK/tools/bin/python" -m build --sdist -o "$WORK/sdist" .
SDIST=$(ls "$WORK"/sdist/*.tar.gz)
echo "$SDIST"

step "what the sdist holds"
tar -tzf "$SDIST" > "$WORK/list"
for f in pyproject.toml CMakeLists.txt README.md LICENSE csrc/adaptopt.h csrc/dispatch.c \
         src/adaptopt/_kernels.pyx src/adaptopt/reference.py tests/conftest.py; do
  grep -q "^[^/]*/$f\$" "$WORK/list" || { echo "FAIL: $f is not in the sdist" >&2; exit 1; }
done
if grep -qE '^[^/]*/(\.ci|build|\.venv[^/]*)/' "$WORK/list"; then
  echo "FAIL: the sdist holds build or CI files:" >&2; grep -E '^[^/]*/(\.ci|build|\.venv)' "$WORK/list" | head >&2; exit 1
fi
echo "$(wc -l < "$WORK/list") entries, sources and tests present, no .ci/ build/ .venv*/"

step "pip install the sdist into a fresh venv"
"$PY" -m venv "$WORK/venv"
. "$WORK/venv/bin/activate"
timeout 300 python -m pip install --quiet --upgrade pip
timeout 900 python -m pip install --quiet "adaptopt[test] @ file://$SDIST"
python -m adaptopt info

step "the sdist's tests, outside any source tree"
mkdir "$WORK/unpacked" "$WORK/run"
tar -xzf "$SDIST" -C "$WORK/unpacked"
cp -r "$WORK"/unpacked/*/tests "$WORK/run/tests"
cp "$WORK"/unpacked/*/README.md "$WORK/run/"
cd "$WORK/run"
python -c "import adaptopt, pathlib; p = pathlib.Path(adaptopt.__file__); print('adaptopt from', p); assert 'site-packages' in p.parts"
set +e
# CI_SDIST_TESTS: a subset (the README's suite already ran on the source build)
timeout 900 python -m pytest -ra -p no:cacheprovider ${CI_SDIST_TESTS:-tests}
status=$?
set -e
[ "$status" -ne 5 ] || { echo "FAIL: pytest collected no tests" >&2; exit 1; }
exit "$status"
