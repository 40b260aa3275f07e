"""The kernels against the NumPy reference: bit for bit (0 ULP).

Every algorithm and option set, float32 and float64, sizes around the SIMD
widths (8/16 float32, 4/8 float64) and the OpenMP threshold, 1 and 2
threads, every SIMD path this machine runs; 20 steps from the same start.
"""
import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import adaptopt
from adaptopt import _kernels, reference

from conftest import assert_bitwise, assert_same_state, make_grad

CASES = [
    ("Adam", {}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"maximize": True, "weight_decay": 0.1}),
    ("Adam", {"betas": (0.3, 0.5), "eps": 1e-3, "amsgrad": True, "weight_decay": 0.01}),
    ("AdamW", {}),
    ("AdamW", {"amsgrad": True, "maximize": True, "weight_decay": 0.3}),
    ("Adagrad", {}),
    ("Adagrad", {"lr_decay": 0.05, "weight_decay": 0.1, "initial_accumulator_value": 0.3}),
    ("Adagrad", {"maximize": True, "eps": 1e-3}),
    ("RMSprop", {}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1, "maximize": True}),
    ("RMSprop", {"centered": True, "alpha": 0.3}),
    ("SGD", {}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "dampening": 0.25, "weight_decay": 0.1}),
    ("SGD", {"momentum": 0.9, "nesterov": True, "maximize": True}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
            for name, kw in CASES]
SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 1000003]


def sizes(name, dtype):
    """SIZES and the algorithm's serial/parallel threshold (per dtype) +-1."""
    algo = getattr(adaptopt, name).spec.code
    t = _kernels.get_threshold(algo, 0 if dtype == np.float32 else 1)
    assert t > 1
    return sorted({*SIZES, t - 1, t, t + 1})
STEPS = 20


def run(cls, kw, p0, grads, **extra):
    p = [a.copy() for a in p0]
    opt = cls(p, lr=0.01, **kw, **extra)
    for g in grads:
        opt.step(g)
    return p, opt


@functools.lru_cache(maxsize=None)
def trajectory(case, dtype, size):
    """The reference's result, shared by every path and thread count."""
    name, kw = CASES[case]
    rng = np.random.default_rng([case, size, np.dtype(dtype).itemsize])
    p0 = [rng.standard_normal(size).astype(dtype)]
    grads = [[make_grad(rng, (size,), dtype)] for _ in range(STEPS)]
    p, opt = run(getattr(reference, name), kw, p0, grads)
    return p0, grads, p, opt


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_bitwise_equal_to_reference(case, dtype, n_threads, isa):
    name, kw = CASES[case]
    for size in sizes(name, dtype):
        p0, grads, p_ref, ref = trajectory(case, dtype, size)
        grads_before = [[g.copy() for g in gs] for gs in grads]
        p, fast = run(getattr(adaptopt, name), kw, p0, grads, n_threads=n_threads)
        assert_bitwise(p[0], p_ref[0], f"{name} {kw} {dtype.__name__} n={size} params")
        assert_same_state(fast, ref)
        for gs, before in zip(grads, grads_before):
            assert_bitwise(gs[0], before[0], "gradient modified")


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_many_arrays_both_dtypes_split_across_threads(case, isa, threshold, rng):
    """Several arrays of different shapes and both dtypes in one optimizer,
    the parallel threshold at 1 so thread cuts fall inside and between
    arrays; some gradients None (those parameters are skipped)."""
    threshold(1)
    name, kw = CASES[case]
    shapes = [(3, 5), (0,), (17,), (2, 3, 4), (1,), (40, 33), (7,), (1000,)]
    p0 = [rng.standard_normal(s).astype(np.float32 if k % 3 else np.float64)
          for k, s in enumerate(shapes)]
    grads = [[None if (k + t) % 4 == 3 else make_grad(rng, a.shape, a.dtype)
              for k, a in enumerate(p0)] for t in range(STEPS)]
    p_ref, ref = run(getattr(reference, name), kw, p0, grads)
    for n_threads in (1, 2):
        p, fast = run(getattr(adaptopt, name), kw, p0, grads, n_threads=n_threads)
        for k, (a, b) in enumerate(zip(p, p_ref)):
            assert_bitwise(a, b, f"params[{k}] n_threads={n_threads}")
        assert_same_state(fast, ref)


hyper = st.floats(0.0, 0.999)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"]),
       b1=hyper, b2=hyper, lr=st.floats(0.0, 10.0), eps=st.floats(0.0, 1.0),
       wd=st.sampled_from([0.0, 1e-4, 0.5]), flag1=st.booleans(), flag2=st.booleans(),
       maximize=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       size=st.integers(0, 70), seed=st.integers(0, 2**32 - 1))
def test_random_hyperparameters(name, b1, b2, lr, eps, wd, flag1, flag2, maximize, dtype,
                                size, seed):
    kw = {"Adam": dict(betas=(b1, b2), eps=eps, amsgrad=flag1),
          "AdamW": dict(betas=(b1, b2), eps=eps, amsgrad=flag1),
          "Adagrad": dict(lr_decay=b1, eps=eps, initial_accumulator_value=b2),
          "RMSprop": dict(alpha=b1, eps=eps, centered=flag1, momentum=b2 if flag2 else 0.0),
          "SGD": dict(momentum=b1, dampening=0.0 if flag2 else b2, nesterov=flag2 and b1 > 0),
          }[name]
    kw.update(lr=lr, weight_decay=wd, maximize=maximize)
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(size).astype(dtype)]
    grads = [[make_grad(rng, (size,), dtype)] for _ in range(5)]
    kw_run = dict(kw)
    lr_ = kw_run.pop("lr")

    def go(cls):
        p = [p0[0].copy()]
        opt = cls(p, lr=lr_, **kw_run)
        for g in grads:
            opt.step(g)
        return p, opt

    p_ref, ref = go(getattr(reference, name))
    p, fast = go(getattr(adaptopt, name))
    assert_bitwise(p[0], p_ref[0], f"{name} {kw}")
    assert_same_state(fast, ref)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_late_steps_bias_correction_one(dtype, amsgrad, isa):
    """Past ~17K (float32) / ~37K (float64) steps sqrt(1 - beta2^t) rounds
    to 1 and the kernel skips that division; steps on both sides of that
    point stay bitwise equal to the reference."""
    rng = np.random.default_rng(7)
    n = 1037
    p0 = rng.standard_normal(n).astype(dtype)
    st = {"exp_avg": (rng.standard_normal(n) * 0.1).astype(dtype),
          "exp_avg_sq": rng.random(n).astype(dtype)}
    if amsgrad:
        st["max_exp_avg_sq"] = st["exp_avg_sq"] + rng.random(n).astype(dtype)
    one = np.dtype(dtype).type(1)
    for step in (100, 20_000, 40_000, 10**6):
        bc2s = math.sqrt(1 - 0.999 ** (step + 1))
        results = []
        for mod in (reference, adaptopt):
            p = p0.copy()
            opt = mod.Adam([p], amsgrad=amsgrad)
            opt.load_state_dict({"state": {0: {"step": step, **{k: v.copy() for k, v in st.items()}}},
                                 "param_groups": opt.state_dict()["param_groups"]})
            opt.step([make_grad(np.random.default_rng(step), (n,), dtype)])
            results.append((p, opt))
        assert_bitwise(results[1][0], results[0][0], f"step {step}, bc2s==1: {dtype(bc2s) == one}")
        assert_same_state(results[1][1], results[0][1])
