"""The kernels compiled for aarch64 and run under qemu-user, bit for bit
against the same kernels compiled for x86-64 (which test_parity holds to
the NumPy reference), for every algorithm, dtype and flag value the C API
accepts.  tools/aarch64/run.py explains how; .ci/aarch64.sh installs the
cross compiler and qemu from Debian.  About 30 seconds per run.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adaptopt import _kernels

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "tools" / "aarch64" / "run.py"

if not RUN.exists():  # tests copied out of the source tree (.ci/wheel.sh)
    pytest.skip(f"needs the source tree: {RUN.relative_to(ROOT)} is not beside tests/",
                allow_module_level=True)
_spec = importlib.util.spec_from_file_location("adaptopt_aarch64_run", RUN)
harness = importlib.util.module_from_spec(_spec)  # not "run": tools/avx512_bochs has one too
_spec.loader.exec_module(harness)

pytestmark = pytest.mark.skipif(
    bool(harness.missing()),
    reason=f"cannot cross-compile and emulate aarch64: missing {', '.join(harness.missing())}")


def emulate(*args):
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                          timeout=900)


def test_the_harness_compiles_with_the_builds_flags():
    common, _ = harness.cmake_flags()
    assert "-ffp-contract=off" in common and not any("fast-math" in f for f in common)
    assert all(f in _kernels.build_flags() for f in common)


def test_aarch64_kernels_equal_x86_kernels_under_qemu():
    out = emulate()
    text = out.stdout + out.stderr
    m = re.search(r"aarch64: (\d+) cases, (\d+) buffers compared, (\d+) mismatches", out.stdout)
    assert m and int(m.group(1)) > 10000 and m.group(3) == "0", text
    # every algorithm of the C API was enumerated and run
    listed = re.search(r"algorithms \(from the C API\): (.*)", out.stdout).group(1)
    assert all(name in listed for name in _kernels.ALGOS), listed
    assert "fused multiply-add: 0;" in out.stdout, text
    assert "installed adaptopt (scalar kernels):" in out.stdout and \
        re.search(r"installed adaptopt \(scalar kernels\): \d+ buffers compared, 0 mismatches", out.stdout), text
    assert "AARCH64-PASS" in out.stdout and out.returncode == 0, text


def test_the_emulated_check_catches_fma_contraction():
    """Control: the aarch64 kernels built with FMA contraction must fail."""
    out = emulate("--fma")
    assert "AARCH64-FAIL" in out.stdout and out.returncode == 1, out.stdout + out.stderr
    assert "fused multiply-add: 0;" not in out.stdout
