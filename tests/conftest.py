import numpy as np
import pytest

import adaptopt
from adaptopt import _kernels


def bits(a):
    """The array's bytes as unsigned integers: equality means 0 ULP."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


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
