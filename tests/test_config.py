import json
import os
import subprocess
import sys

import numpy as np
import pytest

import adaptopt
from adaptopt import _kernels


def test_show_config_dicts_and_stdout(capsys):
    info = adaptopt.show_config(mode="dicts")
    assert info["version"] == adaptopt.__version__
    assert isinstance(info["openmp"], bool)
    assert info["num_threads"] >= 1
    assert info["isa"] in info["isa_available"]
    assert "scalar" in info["isa_compiled"]
    assert set(info["isa_available"]) <= set(info["isa_compiled"])
    if not info["openmp"]:
        assert info["num_threads"] == 1
    adaptopt.show_config()
    out = capsys.readouterr().out
    assert "openmp" in out and info["isa"] in out and info["compiler"] in out
    with pytest.raises(ValueError, match="mode must be"):
        adaptopt.show_config(mode="json")


def test_parallel_thresholds_per_algorithm_and_dtype(threshold):
    table = adaptopt.show_config(mode="dicts")["parallel_threshold"]
    assert set(table) == set(_kernels.ALGORITHMS)   # every row of csrc/algorithms.h
    for _algo, per_dtype in table.items():
        assert set(per_dtype) == {"float32", "float64"}
        # float64 holds half the elements per vector: it never needs more of them
        assert 1 < per_dtype["float64"] <= per_dtype["float32"]
    adam, sgd = _kernels.ALGOS["adam"], _kernels.ALGOS["sgd"]
    threshold(123, adam, 1)  # one entry only
    assert _kernels.get_threshold(adam, 1) == 123
    assert _kernels.get_threshold(adam, 0) == table["adam"]["float32"]
    assert _kernels.get_threshold(sgd, 1) == table["sgd"]["float64"]
    threshold(7, -1, 0)  # every algorithm, float32
    assert [_kernels.get_threshold(a, d) for a in (adam, sgd) for d in (0, 1)] == [
        7, 123, 7, table["sgd"]["float64"]]
    assert _kernels.get_threshold(99, 0) == 0 and _kernels.get_threshold(adam, 5) == 0


def test_num_threads_resolution():
    default = adaptopt.get_num_threads()
    try:
        adaptopt.set_num_threads(1)
        assert adaptopt.get_num_threads() == 1
        if _kernels.openmp():
            adaptopt.set_num_threads(2)
            assert adaptopt.get_num_threads() == min(2, len(os.sched_getaffinity(0)))
            adaptopt.set_num_threads(-1)  # all CPUs
            assert adaptopt.get_num_threads() == len(os.sched_getaffinity(0))
        with pytest.raises(ValueError, match="n must not be 0"):
            adaptopt.set_num_threads(0)
        with pytest.raises(TypeError, match="n must be an int"):
            adaptopt.set_num_threads("2")
    finally:
        adaptopt.set_num_threads(None)
    assert adaptopt.get_num_threads() == default


def test_set_isa_errors_and_round_trip():
    before = adaptopt.get_isa()
    with pytest.raises(ValueError, match="isa must be one of"):
        adaptopt.set_isa("sse9")
    for name in adaptopt.available_isas():
        adaptopt.set_isa(name)
        assert adaptopt.get_isa() == name
    unsupported = [n for i, n in enumerate(_kernels.ISAS)
                   if _kernels.isa_compiled(i) and not _kernels.isa_supported(i)]
    for name in unsupported:
        with pytest.raises(RuntimeError, match="this CPU cannot run it"):
            adaptopt.set_isa(name)
        assert adaptopt.get_isa() == adaptopt.available_isas()[-1]
    adaptopt.set_isa(None)
    assert adaptopt.get_isa() == adaptopt.available_isas()[-1]
    adaptopt.set_isa(before)


def _isa_in_subprocess(value):
    env = dict(os.environ, ADAPTOPT_ISA=value)
    r = subprocess.run([sys.executable, "-W", "always", "-c",
                        "import adaptopt; print(adaptopt.get_isa())"],
                       env=env, capture_output=True, text=True, check=True)
    return r.stdout.strip(), r.stderr


def test_isa_environment_variable():
    assert _isa_in_subprocess("scalar") == ("scalar", "")
    isa, err = _isa_in_subprocess("bogus")
    assert isa == adaptopt.available_isas()[-1]
    assert "ignoring ADAPTOPT_ISA='bogus'" in err


def test_kernel_rejects_bad_arguments():
    """The C boundary checks what Python should never send."""
    ptr = np.zeros(5, np.uint64)
    off = np.zeros(1, np.uintp)
    adam = _kernels.ALGOS["adam"]
    assert _kernels.step(adam, 0, ptr, 5, off, np.zeros(7), 0, 1) == _kernels.OK  # empty batch
    assert _kernels.step(adam, 0, ptr, 4, off, np.zeros(7), 0, 1) == _kernels.EINVAL  # nbuf
    assert _kernels.step(adam, 0, ptr, 5, off, np.zeros(6), 0, 1) == _kernels.EINVAL  # nscal
    assert _kernels.step(adam, 2, ptr, 5, off, np.zeros(7), 0, 1) == _kernels.EINVAL  # dtype
    assert _kernels.step(adam, 0, ptr, 5, off, np.zeros(7), 16, 1) == _kernels.EINVAL  # flags
    assert _kernels.step(99, 0, ptr, 5, off, np.zeros(7), 0, 1) == _kernels.EINVAL  # algo


def test_one_openmp_runtime_with_torch():
    """torch's bundled libgomp has the system's soname, so whichever order
    the two are imported in, one OpenMP runtime (one thread pool) serves
    both: no two pools competing for the cores."""
    pytest.importorskip("torch")
    if not _kernels.openmp():
        pytest.skip("built without OpenMP")
    for order in ("import torch, adaptopt", "import adaptopt, torch"):
        code = (f"{order}; import numpy as np, json\n"
                "adaptopt.Adam([np.zeros(100000, np.float32)], n_threads=2).step("
                "[np.ones(100000, np.float32)])\n"
                "torch.ones(10**6).add_(1)\n"
                "print(json.dumps(adaptopt.show_config(mode='dicts')['openmp_runtime']))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runtimes = json.loads(r.stdout)
        assert len(runtimes) == 1, (order, runtimes)
