"""Mixed precision (issue 13; grad_cast of issue 12): 16-bit parameters,
gradients and state, float32 master weights, stochastic rounding, against
the NumPy reference bit for bit, on every algorithm, SIMD path and thread
count; the rounding helpers against ml_dtypes and NumPy's float16."""
import functools

import numpy as np
import pytest
from conftest import assert_bitwise, assert_same_state

import adaptopt
from adaptopt import _kernels, _precision, _rounding, reference
from adaptopt.algorithms import SPECS

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes provides NumPy's bfloat16")
BF16, F16, F32, F64 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32), \
    np.dtype(np.float64)

# one option set per algorithm that exercises its state buffers
OPTIONS = {"Adam": {"amsgrad": True, "weight_decay": 0.1}, "AdamW": {"weight_decay": 0.1},
           "SGD": {"momentum": 0.9, "nesterov": True}, "RMSprop": {"centered": True,
                                                                   "momentum": 0.5},
           "Adagrad": {"lr_decay": 0.01}, "ASGD": {"t0": 2.0}}
ALGOS = [s.name for s in SPECS]
# (parameter dtype, gradient dtype, precision options)
PRECISIONS = [
    (BF16, BF16, {}), (F16, F16, {}), (F32, BF16, {}), (F32, F16, {}),
    (BF16, BF16, {"master_weights": True}), (F16, F16, {"master_weights": True}),
    (BF16, BF16, {"stochastic_rounding": True, "seed": 7}),
    (F16, F16, {"stochastic_rounding": True, "master_weights": True, "seed": 2**63 + 5}),
    (BF16, BF16, {"state_dtype": "float32"}), (F32, F32, {"state_dtype": "bfloat16"}),
    (F32, F32, {"state_dtype": "float16", "stochastic_rounding": True}),
    (F64, F32, {"grad_cast": "same_kind"}), (F32, F64, {"grad_cast": "same_kind"}),
]
PREC_IDS = [f"{p.name}-{g.name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
            for p, g, kw in PRECISIONS]
SIZES = (0, 1, 255, 257, 40000)  # block edges; past every algorithm's thread threshold
STEPS = 4


def _trajectory(cls, name, prec, size, lr):
    pdt, gdt, kw = PRECISIONS[prec]
    rng = np.random.default_rng([ALGOS.index(name), prec, size])
    p = rng.standard_normal(size).astype(np.float32).astype(pdt)
    grads = [(rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 1, size)).astype(gdt)
             for _ in range(STEPS)]
    opt = cls([p], lr=lr, **OPTIONS.get(name, {}), **kw)
    for g in grads:
        opt.step([g])
    return p, opt, grads


@functools.cache
def expected(name, prec, size):
    return _trajectory(getattr(reference, name), name, prec, size, 0.01)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("prec", range(len(PRECISIONS)), ids=PREC_IDS)
@pytest.mark.parametrize("name", ALGOS)
def test_bitwise_equal_to_reference(name, prec, n_threads, isa):
    for size in SIZES:
        p_ref, ref, grads = expected(name, prec, size)
        before = [g.copy() for g in grads]
        p, fast, _ = _trajectory(functools.partial(getattr(adaptopt, name),
                                                   n_threads=n_threads),
                                 name, prec, size, 0.01)
        assert_bitwise(p, p_ref, f"{name} size {size}: parameter")
        assert_same_state(fast, ref)
        for g, g0 in zip(grads, before):
            assert_bitwise(g, g0, "the gradient is never written")


def test_the_precision_table_moves_something():
    """The cases above are not vacuous: each changes the 16-bit parameter,
    and master weights / stochastic rounding change the result."""
    outs = {}
    for prec, (pdt, _, kw) in enumerate(PRECISIONS):
        p, opt, _ = expected("Adam", prec, 257)
        p0 = np.random.default_rng([ALGOS.index("Adam"), prec, 257]).standard_normal(257)
        assert not np.array_equal(p.astype(np.float64), p0.astype(np.float32).astype(pdt)
                                  .astype(np.float64)), PREC_IDS[prec]
        outs[prec] = p
        st = opt.state[0]
        sdt = _precision.numpy_dtype(kw.get("state_dtype") or pdt.name)
        assert st["exp_avg"].dtype == sdt
        assert (_precision.MASTER in st) == (kw.get("master_weights", False) and pdt.itemsize == 2)
    assert not np.array_equal(outs[0].view(np.uint16), outs[4].view(np.uint16))
    assert not np.array_equal(outs[0].view(np.uint16), outs[6].view(np.uint16))


def test_master_weights_in_state_dict_and_back():
    p = np.linspace(-1, 1, 300, dtype=np.float32).astype(BF16)
    opt = adaptopt.Adam([p], lr=1e-3, master_weights=True)
    g = np.full(300, 0.5, BF16)
    opt.step([g])
    sd = opt.state_dict()
    assert sd["state"][0][_precision.MASTER].dtype == np.float32
    assert sd["param_groups"][0]["master_weights"] is True
    q = p.copy()
    other = adaptopt.Adam([q], lr=1e-3, master_weights=True)
    other.load_state_dict(sd)
    opt.step([g])
    other.step([g])
    assert_bitwise(p, q)
    bad = opt.state_dict()
    bad["state"][0][_precision.MASTER] = bad["state"][0][_precision.MASTER].astype(BF16)
    with pytest.raises(ValueError, match="master_weight"):
        other.load_state_dict(bad)
    sd["param_groups"][0]["master_weights"] = False
    with pytest.raises(ValueError, match="master"):
        adaptopt.Adam([p.copy()], lr=1e-3).load_state_dict(sd)


def test_refused_dtype_combinations_name_the_argument():
    p = np.zeros(8, np.float64)
    opt = adaptopt.Adam([p])
    with pytest.raises(TypeError, match=r"grads\[0\].*grad_cast='same_kind'"):
        opt.step([np.zeros(8, np.float32)])
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        adaptopt.Adam([np.zeros(8, BF16)]).step([np.zeros(8, np.float32)])
    with pytest.raises(TypeError, match="state_dtype"):
        adaptopt.Adam([p], state_dtype="bfloat16").step([np.zeros(8)])
    with pytest.raises(ValueError, match="state_dtype"):
        adaptopt.Adam([p], state_dtype="int4")
    with pytest.raises(ValueError, match="grad_cast"):
        adaptopt.Adam([p], grad_cast="unsafe")
    assert not p.any() and opt.state == {}


def test_sr_is_unbiased_and_seeded():
    """Stochastic rounding rounds up with the probability of the dropped
    fraction: the mean of many roundings of one value is that value."""
    x = np.full(1 << 16, 1.0 + 2.0 ** -10, np.float32)  # 1/8 of a bfloat16 ulp above 1
    r = _rounding.sr_bits(_rounding.sr_key(1, 2, 3, 4), x.size)
    up = _rounding.bf16_to_f32(_rounding.f32_to_bf16_sr(x, r)) > 1
    assert abs(up.mean() - 1 / 8) < 0.01
    h = _rounding.f16_to_f32(_rounding.f32_to_f16_sr(np.full(1 << 16, 1 + 2.0 ** -12,
                                                            np.float32), r))
    assert abs((h > 1).mean() - 1 / 4) < 0.01
    sub = np.full(1 << 16, 2.0 ** -24 * 0.375, np.float32)  # float16 subnormal range
    h = _rounding.f16_to_f32(_rounding.f32_to_f16_sr(sub, r))
    assert abs((h > 0).mean() - 0.375) < 0.01
    assert not np.array_equal(r, _rounding.sr_bits(_rounding.sr_key(2, 2, 3, 4), x.size))


# --- the conversions, through the kernels of each SIMD path -----------------------------
def _mirror(master, pdt, stochastic=False, seed=0):
    """The kernel's 16-bit image of float32 values (a master weight's copy):
    SGD with lr 0 leaves the master as it is and writes the copy."""
    p = np.zeros(master.size, pdt)
    opt = adaptopt.SGD([p], lr=0.0, master_weights=True, stochastic_rounding=stochastic,
                       seed=seed)
    opt.state[0] = {"step": 0, _precision.MASTER: master.copy()}
    opt.step([np.zeros(master.size, pdt)])
    return p.view(np.uint16)


def _all_16bit():
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize("dt", [BF16, F16], ids=["bfloat16", "float16"])
def test_every_16bit_value_loads_exactly(dt, isa):
    """All 2^16 values: the kernel's load (SGD's first momentum buffer is the
    gradient, stored in float32) equals ml_dtypes' / NumPy's conversion."""
    g = _all_16bit().view(dt)
    p = np.zeros(g.size, np.float32)
    opt = adaptopt.SGD([p], lr=0.0, momentum=0.5)
    opt.step([g])
    got = opt.state[0]["momentum_buffer"]
    want = g.astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert_bitwise(got[~nan], want[~nan])
    twin = (_rounding.bf16_to_f32 if dt == BF16 else _rounding.f16_to_f32)(g.view(np.uint16))
    assert_bitwise(twin[~nan], want[~nan])


@pytest.mark.parametrize("dt", [BF16, F16], ids=["bfloat16", "float16"])
def test_float32_rounds_to_nearest_even(dt, isa):
    """2^22 float32 values: every exponent, random mantissas, every tie and
    its neighbours, infinities, NaN: the kernel's and the twin's rounding
    equal ml_dtypes' / NumPy's, NaN stays NaN."""
    rng = np.random.default_rng(5)
    u = rng.integers(0, 1 << 32, 1 << 22, dtype=np.uint64).astype(np.uint32)
    drop = 16 if dt == BF16 else 13
    ties = (u[:1 << 18] & ~np.uint32((1 << drop) - 1)) | np.uint32(1 << (drop - 1))
    u = np.concatenate([u, ties, ties + 1, ties - 1, np.array([0x7F800000, 0xFF800000,
                                                              0x7FC00000, 0x477FF000,
                                                              0x477FEFFF], np.uint32)])
    x = u.view(np.float32)
    with np.errstate(over="ignore"):
        want = x.astype(dt).view(np.uint16)
    nan = np.isnan(x)
    twin = (_rounding.f32_to_bf16 if dt == BF16 else _rounding.f32_to_f16)(x)
    got = _mirror(x, dt)
    for h in (twin, got):
        assert np.array_equal(h[~nan], want[~nan])
        assert np.isnan(h[nan].view(dt).astype(np.float32)).all()


@pytest.mark.parametrize("dt", [BF16, F16], ids=["bfloat16", "float16"])
def test_stochastic_rounding_kernel_equals_twin(dt, isa):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x, (rng.standard_normal(1 << 16) * 1e-6).astype(np.float32)])
    seed = 11
    got = _mirror(x, dt, stochastic=True, seed=seed)
    bits = _rounding.sr_bits(_rounding.sr_key(seed, 1, 0, _rounding.MIRROR_BUFFER), x.size)
    want = (_rounding.f32_to_bf16_sr if dt == BF16 else _rounding.f32_to_f16_sr)(x, bits)
    nan = np.isnan(x)
    assert np.array_equal(got[~nan], want[~nan])
    with np.errstate(invalid="ignore", over="ignore"):
        lo = x.astype(dt)  # nearest; stochastic is one of the two neighbours
        gv, lv = got.view(dt).astype(np.float64), lo.astype(np.float64)
        fin = np.isfinite(gv) & np.isfinite(lv)
        ulp = np.maximum(np.abs(np.spacing(lo)), np.abs(np.spacing(got.view(dt))))
    assert (np.abs(gv[fin] - lv[fin]) <= ulp[fin].astype(np.float64)).all()


def test_staged_kernel_rejects_what_it_cannot_run():
    st = _kernels.Staging(1, (_kernels.STORE_BF16,) * 3)  # 16-bit storage, double arithmetic
    p = np.zeros(4, np.uint16)
    ptr = np.array([p.ctypes.data] * 3, np.uint64)
    rc = _kernels.step_staged(_kernels.ALGOS["sgd"], st, ptr, None, 3,
                              np.array([0, 4], np.uintp), [0.0, 0.0, 1.0, -0.1], 0, 1)
    assert rc == _kernels.EINVAL


def test_demo_low_precision_shows_the_stall():
    """The demo's claim: round-to-nearest 16-bit weights stall at lr 1e-5,
    master weights and stochastic rounding keep float32's progress."""
    from adaptopt import demo
    r = demo.run("low-precision", quick=True)
    final = {run["name"]: run["mse"][-1] for run in r["runs"]}
    start = r["start_mse"]
    f32 = final["float32"]
    drop = start - f32
    assert drop > 0.5
    assert start - final["16-bit, round to nearest"] < 0.5 * drop  # stalls
    assert abs(final["16-bit + master_weights"] - f32) < 0.01 * drop
    assert abs(final["16-bit + stochastic_rounding"] - f32) < 0.05 * drop
