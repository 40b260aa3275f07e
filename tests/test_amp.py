"""AMP in the step: opt.step(grads, grad_scale=..., max_grad_norm=...).

The global norm's reduction (csrc/gradnorm.c) against its NumPy reference
(adaptopt._amp.sumsq) bit for bit on every SIMD path and thread count; the
fused unscale + clip + update of every algorithm against the reference
classes bit for bit; skipped steps change nothing; bad arguments raise and
change nothing.
"""
import copy
import math
import struct

import numpy as np
import pytest
from conftest import assert_bitwise, assert_same_state, make_grad

import adaptopt
from adaptopt import _amp, _kernels, reference

B = _kernels.GRADNORM_BLOCK


def c_sumsq(grads, n_threads):
    n = len(grads)
    ptr = np.empty(n, dtype=np.uint64)
    _kernels.fill_pointers(grads, ptr, 0, 1)
    codes = np.array([adaptopt.optim._STORE_CODE[g.dtype] for g in grads], dtype=np.intc)
    off = np.zeros(n + 1, dtype=np.uintp)
    off[1:] = np.cumsum([g.size for g in grads])
    rc, s, bad = _kernels.grad_sumsq(ptr, codes, off, n_threads)
    assert rc == _kernels.OK
    return s, bad


def dbits(x):
    return struct.pack("<d", x)


SIZES = [0, 1, 15, 16, 17, 31, B - 1, B, B + 1, 3 * B + 5, _kernels.GRADNORM_THRESHOLD + 1]


@pytest.mark.parametrize("n_threads", [1, 2])
def test_sumsq_kernel_is_the_reference_bit_for_bit(isa, n_threads, rng):
    for trial in range(6):
        grads = [make_grad(rng, (n,), np.float32 if (k + trial) % 2 else np.float64)
                 for k, n in enumerate(rng.permutation(SIZES))]
        s, bad = c_sumsq(grads, n_threads)
        assert dbits(s) == dbits(_amp.sumsq(grads)) and bad == 0
    one = [make_grad(rng, (1 << 20,), np.float32)]
    assert dbits(c_sumsq(one, n_threads)[0]) == dbits(_amp.sumsq(one))


def test_sumsq_order_is_the_documented_one():
    """The reference's order is sequential lanes and blocks: a pairwise or
    naive sum differs on data chosen to expose the order."""
    x = np.full(3 * B, 1.0, dtype=np.float64)
    x[0] = 2.0 ** 27  # its square swallows the later unit squares one by one
    s = _amp.sumsq([x])
    lanes = [2.0 ** 54] + [0.0] * 15
    for k in range(16):
        for _i in range(k + (16 if k == 0 else 0), B, 16):
            lanes[k] += 1.0
    for h in (8, 4, 2, 1):
        for k in range(h):
            lanes[k] += lanes[k + h]
    want = lanes[0] + float(B) + float(B)  # the two later blocks are exact (4096 ones)
    assert s == want and dbits(c_sumsq([x], 1)[0]) == dbits(want)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_sumsq_non_finite_flag(isa, n_threads):
    for dtype in (np.float32, np.float64):
        for bad_value in (np.inf, -np.inf, np.nan):
            g = np.ones(5 * B + 3, dtype=dtype)
            g[4 * B + 1] = bad_value
            s, bad = c_sumsq([np.ones(7, dtype), g], n_threads)
            assert bad == 1 and not math.isfinite(s)
    huge = np.full(100, 1e200)  # finite float64 whose squares overflow
    s, bad = c_sumsq([huge], n_threads)
    assert s == math.inf and bad == 0


def test_sumsq_rejects_bad_arguments():
    ptr, off = np.zeros(1, np.uint64), np.array([0, 4], np.uintp)
    f32 = np.array([_kernels.STORE_F32], np.intc)
    for bad in (0, 5, -1):  # COMPUTE, the 8-bit codes, out of range
        assert _kernels.grad_sumsq(ptr, np.array([bad], np.intc), off, 1)[0] == _kernels.EINVAL
    assert _kernels.grad_sumsq(ptr, f32, off, 1)[0] == _kernels.EINVAL  # NULL
    g = np.ones(4, np.float32)
    _kernels.fill_pointers([g], ptr, 0, 1)
    assert _kernels.grad_sumsq(ptr, f32, off, 0)[0] == _kernels.EINVAL
    assert _kernels.grad_sumsq(ptr, f32, off, 1) == (_kernels.OK, 4.0, 0)


def test_norm_precision():
    """float32 squares are exact in float64: the norm is within a few ulp of
    the exactly rounded one (math.fsum)."""
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(n).astype(np.float32) * 10.0 ** rng.uniform(-5, 5)
             for n in (1, 1000, 70001, 3 * B)]
    exact = math.sqrt(math.fsum(float(v) ** 2 for g in grads for v in g.astype(np.float64)))
    w = np.zeros(1, np.float32)
    ps = [np.zeros_like(g) for g in grads]
    r = adaptopt.SGD(ps + [w]).step(grads + [None], max_grad_norm=1.0)
    assert abs(r.norm - exact) <= 4 * np.spacing(exact)


# --- the step ------------------------------------------------------------------
NAMES = adaptopt.optim.__all__
SETTINGS = [dict(grad_scale=1024.0), dict(max_grad_norm=0.5),
            dict(grad_scale=3.0, max_grad_norm=1e3), dict(grad_scale=100.0, max_grad_norm=0.1)]


def arrays(name, dtype, rng):
    shapes = [(5,), (33,), (2, 17)] if name != "Adafactor" else [(5,), (7, 9)]
    if name != "Adafactor":
        shapes.append((40001,))  # past every algorithm's thread threshold
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def scaled_grads(ps, rng, scale=100.0):
    return [make_grad(rng, p.shape, p.dtype) % 1e4 * p.dtype.type(scale) for p in ps]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_amp_step_bitwise_equal_to_reference(name, dtype, n_threads, isa):
    rng = np.random.default_rng([len(name), np.dtype(dtype).itemsize])
    p0 = arrays(name, dtype, rng)
    fast_p, ref_p = [p.copy() for p in p0], [p.copy() for p in p0]
    fast = getattr(adaptopt, name)(fast_p, lr=0.01, n_threads=n_threads)
    ref = getattr(reference, name)(ref_p, lr=0.01)
    for t in range(8):
        g = scaled_grads(p0, rng)
        if t == 3:
            g[-1].flat[7] = np.nan if dtype == np.float32 else np.inf
        if t == 5:
            g[0] = None
        before = [None if x is None else x.copy() for x in g]
        kw = SETTINGS[t % len(SETTINGS)]
        rf, rr = fast.step(g, **kw), ref.step(g, **kw)
        assert isinstance(rf, adaptopt.StepResult)
        assert rf.stepped == rr.stepped == (t != 3)
        assert dbits(rf.norm) == dbits(rr.norm) or (math.isnan(rf.norm) and math.isnan(rr.norm))
        for a, b in zip(g, before):
            assert a is None or np.array_equal(a, b, equal_nan=True)  # never written
        for k, (a, b) in enumerate(zip(fast_p, ref_p)):
            assert_bitwise(a, b, f"{name} step {t} param {k}")
        assert_same_state(fast, ref)


def test_clip_is_torch_s_definition():
    """coef = max_norm / (norm + 1e-6), applied only below 1; grad_scale divides."""
    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal(100).astype(np.float32)]
    g = [rng.standard_normal(100).astype(np.float32)]
    norm = math.sqrt(_amp.sumsq(g))
    for max_norm, scale in ((norm / 2, None), (norm * 2, None), (1.0, 8.0), (norm, None)):
        p1, p2 = [p0[0].copy()], [p0[0].copy()]
        r = adaptopt.SGD(p1, lr=1.0).step(g, grad_scale=scale, max_grad_norm=max_norm)
        unscaled = g[0] / np.float32(scale) if scale else g[0]
        n = norm / scale if scale else norm
        coef = max_norm / (n + 1e-6)
        want = unscaled * np.float32(coef) if coef < 1 else unscaled
        adaptopt.SGD(p2, lr=1.0).step([want])
        assert r == (n, True)
        assert_bitwise(p1[0], p2[0])


def test_without_amp_arguments_step_returns_none_and_propagates_nan():
    p = [np.zeros(3, np.float32)]
    assert adaptopt.Adam(p).step([np.array([1, np.nan, 1], np.float32)]) is None
    assert np.isnan(p[0][1])


@pytest.mark.parametrize("cls", [adaptopt, reference], ids=["fast", "reference"])
@pytest.mark.parametrize("name", ["Adam", "SGD", "Adafactor"])
def test_skipped_step_changes_nothing(cls, name):
    rng = np.random.default_rng(1)
    p = [rng.standard_normal(50).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)]
    opt = getattr(cls, name)(p, lr=0.1, momentum=0.9) if name == "SGD" else \
        getattr(cls, name)(p, lr=0.1)
    bad = [np.ones(50, np.float32), np.full((6, 4), np.inf, np.float32)]
    r = opt.step(bad, grad_scale=2.0)
    assert not r.stepped and r.norm == math.inf and opt.state == {}  # no state made
    assert np.array_equal(bad[1], np.full((6, 4), np.inf, np.float32))
    opt.step([np.ones(50, np.float32), np.ones((6, 4), np.float32)], max_grad_norm=1.0)
    before_p, before_sd = [x.copy() for x in p], copy.deepcopy(opt.state_dict())
    r = opt.step([np.full(50, np.nan, np.float32), np.ones((6, 4), np.float32)],
                 max_grad_norm=1.0)
    assert not r.stepped and math.isnan(r.norm)
    for a, b in zip(p, before_p):
        assert_bitwise(a, b)
    sd = opt.state_dict()
    for i, st in before_sd["state"].items():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert_bitwise(sd["state"][i][k], v)
            else:
                assert sd["state"][i][k] == v
    r = opt.step([np.ones(50, np.float32), np.ones((6, 4), np.float32)], grad_scale=1.0)
    assert r.stepped and opt.state[0]["step"] == 2


BAD_SCALE = [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError),
             (math.inf, ValueError), ("2", TypeError), (True, TypeError),
             (np.array([1.0, 2.0]), TypeError)]
BAD_NORM = [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("x", TypeError),
            (False, TypeError), ([1.0], TypeError)]


@pytest.mark.parametrize("cls", [adaptopt, reference], ids=["fast", "reference"])
def test_bad_arguments_raise_and_change_nothing(cls):
    p = [np.ones(10, np.float32)]
    opt = cls.Adam(p, lr=0.1)
    g = [np.ones(10, np.float32)]
    opt.step(g, grad_scale=2.0)
    before = (p[0].copy(), copy.deepcopy(opt.state))
    for v, err in BAD_SCALE:
        with pytest.raises(err, match="grad_scale"):
            opt.step(g, grad_scale=v)
    for v, err in BAD_NORM:
        with pytest.raises(err, match="max_grad_norm"):
            opt.step(g, max_grad_norm=v)
    with pytest.raises(TypeError, match="grads\\[0\\] has dtype float64"):
        opt.step([np.ones(10)], max_grad_norm=1.0)
    with pytest.raises(ValueError, match="grads has 2 entries"):
        opt.step(g + g, grad_scale=2.0)
    with pytest.raises(ValueError, match="shares memory with params"):
        opt.step(p, grad_scale=2.0)
    assert_bitwise(p[0], before[0])
    assert_bitwise(opt.state[0]["exp_avg"], before[1][0]["exp_avg"])
    assert opt.state[0]["step"] == 1
    assert opt.step(g, grad_scale=np.float32(2.0), max_grad_norm=np.array(1.0)).stepped


# --- 16-bit parameters and gradients (through the staging layer) -------------
F16, F32 = np.dtype(np.float16), np.dtype(np.float32)
BF16 = "bfloat16"  # ml_dtypes' (optional: the tests that need it skip without it)
PRECISION = [(BF16, BF16, {}), (F16, F16, {"master_weights": True}),
             (F32, BF16, {}), (F32, F16, {}),
             (BF16, BF16, {"stochastic_rounding": True, "seed": 3, "master_weights": True})]


def dtype_of(d):
    if d == BF16:
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return d


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("case", range(len(PRECISION)))
@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop", "Lion"])
def test_amp_step_16bit_bitwise_equal_to_reference(name, case, n_threads, isa):
    pdt, gdt, kw = PRECISION[case]
    pdt, gdt = dtype_of(pdt), dtype_of(gdt)
    rng = np.random.default_rng(case)
    p0 = [rng.standard_normal(n).astype(pdt) for n in (17, 40001)]
    fast_p, ref_p = [p.copy() for p in p0], [p.copy() for p in p0]
    fast = getattr(adaptopt, name)(fast_p, lr=0.01, n_threads=n_threads, **kw)
    ref = getattr(reference, name)(ref_p, lr=0.01, **kw)
    for t in range(5):
        g = [(rng.standard_normal(p.shape) * 50).astype(gdt) for p in p0]
        if t == 2:
            g[1][5] = np.inf
        setting = SETTINGS[t % len(SETTINGS)]
        rf, rr = fast.step(g, **setting), ref.step(g, **setting)
        assert rf == rr and rf.stepped == (t != 2)
        assert dbits(rf.norm) == dbits(math.sqrt(_amp.sumsq(g)) / setting.get("grad_scale", 1.0)) \
            or not rf.stepped
        for k, (a, b) in enumerate(zip(fast_p, ref_p)):
            if a.itemsize == 2:
                assert np.array_equal(a.view(np.uint16), b.view(np.uint16)), k
            else:
                assert_bitwise(a, b, f"param {k}")
        assert_same_state(fast, ref)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_sumsq_16bit_kernel_is_the_reference(isa, n_threads, rng):
    bf16 = dtype_of(BF16)
    grads = [rng.standard_normal(n).astype(dt) * dt.type(7) for n, dt in
             ((B + 3, bf16), (100, F16), (70001, bf16), (5, F32), (3 * B, F16))]
    s, bad = c_sumsq(grads, n_threads)
    assert dbits(s) == dbits(_amp.sumsq(grads)) and bad == 0
    grads[3][1] = np.nan
    grads[4][7] = np.inf
    for k in (0, 1):
        g = list(grads)
        g[3 + k] = g[3 + k].astype(F16 if k == 0 else bf16)
        assert c_sumsq(g, n_threads)[1] == 1
