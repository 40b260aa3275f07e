"""The avx512 kernels executed on an emulated AVX-512 CPU (bochs), bit for
bit against the scalar kernels (which test_parity holds to the reference).

Without AVX-512 in the CPU, test_parity cannot run the avx512 path; this
runs it anyway.  tools/avx512_bochs/run.py explains how; .ci/run installs
what it needs from Debian.  About a minute per boot.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from adaptopt import _kernels

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "tools" / "avx512_bochs" / "run.py"

if not RUN.exists():  # tests copied out of the source tree (.ci/wheel.sh)
    pytest.skip(f"needs the source tree: {RUN.relative_to(ROOT)} is not beside tests/",
                allow_module_level=True)
sys.path.insert(0, str(RUN.parent))
import run as harness  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not _kernels.isa_compiled(_kernels.ISAS.index("avx512")),
                       reason="this build has no avx512 kernels (not x86-64)"),
    pytest.mark.skipif(bool(harness.missing()),
                       reason=f"cannot emulate: missing {', '.join(harness.missing())}"),
]


def boot(*args):
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                          timeout=900)


def test_the_harness_compiles_with_the_builds_flags():
    common, avx512 = harness.cmake_flags()
    built = _kernels.build_flags()
    assert all(f in built for f in common) and "-ffp-contract=off" in common
    assert all(f in built for f in avx512)


def test_avx512_kernels_equal_scalar_kernels_on_an_emulated_cpu():
    out = boot()
    assert "avx512f=1" in out.stdout, out.stdout + out.stderr
    assert "buffers compared, 0 mismatches" in out.stdout and "AVX512-PASS" in out.stdout, (
        out.stdout + out.stderr)
    assert out.returncode == 0


def test_the_emulated_check_catches_fma_contraction():
    """Control: the same check with FMA contraction allowed must fail."""
    out = boot("--fma")
    assert "AVX512-FAIL" in out.stdout and out.returncode == 1, out.stdout + out.stderr
