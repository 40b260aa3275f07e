"""dispatch.c's MSVC CPU detection (__cpuid, __cpuidex, _xgetbv: MSVC has no
__builtin_cpu_supports) compiled with gcc against a stand-in <intrin.h>
(tools/msvc_cpuid/) and run on this CPU: it must find the same ISAs as
the __builtin_cpu_supports path and as the installed build.  Only the
detection runs (the kernel tables are stubbed); a few seconds."""
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

import adaptopt
from adaptopt import _kernels

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "tools" / "msvc_cpuid"

pytestmark = [
    pytest.mark.skipif(not SHIM.exists(), reason="needs the source tree: tools/msvc_cpuid/"),
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                       reason="x86-64 CPU detection"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
]


def detect(tmp_path, name, *flags):
    exe = tmp_path / name
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-Wno-unused", *flags, "-DADAPTOPT_HAVE_AVX2",
                    "-DADAPTOPT_HAVE_AVX512", f"-I{ROOT / 'csrc'}", str(ROOT / "csrc" / "dispatch.c"),
                    str(SHIM / "main.c"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=") for line in out.split())


def test_msvc_detection_equals_builtin_detection(tmp_path):
    builtin = detect(tmp_path, "builtin")
    msvc = detect(tmp_path, "msvc", "-D_MSC_VER=1930", f"-I{SHIM}")
    assert msvc == builtin
    assert set(builtin.values()) <= {"0", "1"}
    # and the installed build runs exactly those of them it has compiled in
    compiled = [isa for i, isa in enumerate(_kernels.ISAS) if _kernels.isa_compiled(i)]
    assert [isa for isa in compiled if builtin[isa] == "1"] == adaptopt.available_isas()
