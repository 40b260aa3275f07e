import sys

import numpy as np
import pytest

import adaptopt
from adaptopt import _kernels


def bits(a):
    """The array's bytes as unsigned integers: equality means 0 ULP."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_bitwise(a, b, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    ba, bb = bits(a), bits(b)
    if not np.array_equal(ba, bb):
        k = np.flatnonzero(ba.ravel() != bb.ravel())
        raise AssertionError(f"{what}: {k.size} of {a.size} elements differ, first at "
                             f"{k[0]}: {a.ravel()[k[0]]!r} vs {b.ravel()[k[0]]!r}")


def assert_same_state(fast, ref):
    assert fast.state.keys() == ref.state.keys()
    for i, st in ref.state.items():
        assert fast.state[i].keys() == st.keys(), i
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert_bitwise(fast.state[i][k], v, f"state[{i}][{k!r}]")
            else:
                assert fast.state[i][k] == v, (i, k)


def make_grad(rng, shape, dtype):
    """Gradients over many magnitudes: 1e-30..1e30, zeros, both signs."""
    n = int(np.prod(shape))
    g = rng.standard_normal(n)
    wild = rng.random(n) < 0.25
    g[wild] *= 10.0 ** rng.uniform(-30, 30, wild.sum())
    g[rng.random(n) < 0.05] = 0.0
    return g.astype(dtype).reshape(shape)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def isa(request):
    """Run the test under each SIMD path this build has and this CPU runs."""
    name = request.param
    if not _kernels.isa_compiled(_kernels.ISAS.index(name)):
        pytest.skip(f"{name} is not compiled into this build")
    if name not in adaptopt.available_isas():
        pytest.skip(f"this CPU cannot run {name}")
    before = adaptopt.get_isa()
    adaptopt.set_isa(name)
    yield name
    adaptopt.set_isa(before)


@pytest.fixture
def threshold():
    """Set the serial/parallel thresholds for one test, restoring them after."""
    keys = [(a, d) for a in _kernels.ALGOS.values() for d in (0, 1)]
    before = {k: _kernels.get_threshold(*k) for k in keys}
    yield _kernels.set_threshold
    for (a, d), n in before.items():
        _kernels.set_threshold(n, a, d)


# --- added for issue 11 (memory safety); the helpers above are unchanged

def assert_bitwise_any_nan(a, b, what=""):
    """assert_bitwise, except that any NaN equals any NaN: NaN sign and
    payload are not part of the contract (see the README's Numerics); NaN
    positions and every other bit are."""
    import numpy as np
    assert a.dtype == b.dtype and a.shape == b.shape, what
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        k = np.flatnonzero(na.ravel() != nb.ravel())
        raise AssertionError(f"{what}: NaN in one and not the other at {k.size} of {a.size} "
                             f"elements, first at {k[0]}: {a.ravel()[k[0]]!r} vs "
                             f"{b.ravel()[k[0]]!r}")
    assert_bitwise(np.where(na, 0, a), np.where(nb, 0, b), what)


def run_isolated(code, timeout=120, env=None, check=True):
    """Run code in a fresh interpreter, so that a crash is a test failure.

    Returns the CompletedProcess.  With check (the default) a death by a
    signal (named: SIGSEGV, SIGABRT, ...), a timeout or a non-zero exit
    raises AssertionError with the end of stderr, which under the sanitizer
    build holds the ASan/UBSan report."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                           text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(f"the child process hung: killed after {timeout} s; "
                             f"stderr ends: {err[-3000:]}") from None
    if check and r.returncode != 0:
        if r.returncode < 0:
            try:
                how = f"died of {signal.Signals(-r.returncode).name}"
            except ValueError:
                how = f"died of signal {-r.returncode}"
        else:
            how = f"exited with status {r.returncode}"
        raise AssertionError(f"the child process {how}; stdout ends: {r.stdout[-1500:]}\n"
                             f"stderr ends: {r.stderr[-4000:]}")
    return r


@pytest.fixture(autouse=True)
def _openmp_threads_restored():
    """adaptopt's default thread count is the OpenMP runtime's at each step,
    and torch shares that runtime: torch.set_num_threads (the benchmark's
    torch runners call it) would otherwise leak into later tests."""
    before = _kernels.max_threads()
    yield
    torch = sys.modules.get("torch")
    if torch is not None and _kernels.max_threads() != before:
        torch.set_num_threads(before)
