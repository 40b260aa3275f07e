"""NAdam, RAdam, Adamax and Lion: kernel against reference, reference against peers.

Written as tables the shared test tables can absorb:

* ``CASES``: (Spec name, hyperparameter overrides), covering every option
  and flag of the four kernels (both forms of torch.lerp, L2 and decoupled
  decay, maximize, eps = 0, RAdam's never-rectified beta2, Lion's closed
  beta range);
* ``STARTS``: the first steps taken from fresh state (crossing RAdam's
  rho_t > 5 switch at t = 6 for beta2 = 0.999) and late steps where a bias
  correction rounds to 1 (the kernels' BC1_ONE / BC2_ONE variants);
* ``BAD_HYPER``: out-of-range hyperparameters for torch's constructors.

1. The C kernel (tests/kernel_call.py, before the optimizer classes exist)
   against the reference step: bit for bit, parameters and every buffer,
   every case, float32 and float64, every ISA this CPU runs, 1 and 2
   threads, edge sizes, gradients with NaN, +-inf, +-0, subnormals and
   1e+-30.  Every element is compared bit for bit, except that an element
   that is NaN in both passes whatever its sign and payload ("NaN in
   both", see ``assert_same_bits``): where both operands of an addition or
   product are NaN, IEEE 754 leaves open which one the result carries, x86
   returns the first source, and NumPy's loops and GCC both commute such
   operations freely (measured: every difference is NaN against NaN).
2. The reference against torch.optim (foreach=False) for NAdam, RAdam,
   Adamax, and against lion-pytorch for Lion: one step from identical state
   within ULP_BOUND units of the larger operand (NUMERICS.md's measure), and
   200-step trajectories within stated bounds.
3. Each torch algorithm's ``torch_checks`` raises what torch's constructor
   raises (type and message), for every out-of-range hyperparameter.
"""
import inspect
import math

import numpy as np
import pytest

from adaptopt import _kernels
from adaptopt.algorithms import SPECS, adamax, nadam, radam

from conftest import assert_bitwise, bits
from kernel_call import kernel_step

SPEC = {s.name: s for s in SPECS}
MODULE = {"NAdam": nadam, "RAdam": radam, "Adamax": adamax}

CASES = [
    ("NAdam", {}),
    ("NAdam", {"weight_decay": 0.1, "maximize": True}),
    ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "lr": 0.1}),
    ("NAdam", {"betas": (0.3, 0.5), "eps": 1e-3, "momentum_decay": 0.1}),  # lerp's 2nd form
    ("NAdam", {"betas": (0.0, 0.0), "eps": 0.0, "decoupled_weight_decay": True}),
    ("RAdam", {}),
    ("RAdam", {"weight_decay": 0.1, "maximize": True}),
    ("RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "lr": 0.1}),
    ("RAdam", {"betas": (0.3, 0.99), "eps": 1e-3}),                        # lerp's 2nd form
    ("RAdam", {"betas": (0.9, 0.5), "eps": 0.0}),       # rho_inf = 3: never rectified
    ("Adamax", {}),
    ("Adamax", {"weight_decay": 0.1, "maximize": True}),
    ("Adamax", {"betas": (0.3, 0.5), "eps": 0.0}),        # lerp's 2nd form; max(u, |g|)
    ("Lion", {}),
    ("Lion", {"weight_decay": 0.1, "lr": 0.01}),
    ("Lion", {"maximize": True, "betas": (0.5, 0.9), "weight_decay": 1.0}),
    ("Lion", {"betas": (0.0, 1.0)}),                        # lion-pytorch's closed range
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
            for name, kw in CASES]
STARTS = [(1, 8), (60, 4)]        # (first step, number of steps)
SIZES = [0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 1000003]
LR = 1e-2


def hyper(name, kw):
    spec = SPEC[name]
    return spec.checked({**spec.defaults(), "lr": LR, **kw}, name)


def scalar_state(spec, h, before):
    """The parameter's scalar state before step `before` (None if it has none)."""
    if not spec.scalar_state:
        return None
    s = {k: f(h) for k, f in spec.scalar_state.items()}
    for t in range(1, before):
        s = spec.advance(h, t, s)
    return s


# --------------------------------------------------------------------------
# 1. kernel against reference, bit for bit
# --------------------------------------------------------------------------
def hostile_grad(rng, n, dtype):
    """Normal gradients over 1e-30..1e30 with zeros of both signs, NaN of
    both signs, +-inf and subnormals at random places."""
    g = rng.standard_normal(n)
    wild = rng.random(n) < 0.25
    g[wild] *= 10.0 ** rng.uniform(-30, 30, wild.sum())
    g = g.astype(dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny,
                        tiny * 12345, np.finfo(dtype).tiny / 3], dtype=dtype)
    k = rng.random(n) < 0.05
    g[k] = rng.choice(special, k.sum())
    return g


def assert_same_bits(a, b, what):
    """Bit for bit (0 ULP, signed zeros and subnormals included), except that
    NaN matches NaN of any sign and payload (module docstring); a NaN
    against a number fails."""
    assert a.dtype == b.dtype and a.shape == b.shape, what
    differ = (bits(a) != bits(b)) & ~(np.isnan(a) & np.isnan(b))
    if differ.any():
        k = np.flatnonzero(differ)
        raise AssertionError(f"{what}: {k.size} of {a.size} elements differ, first at "
                             f"{k[0]}: {a[k[0]]!r} vs {b[k[0]]!r}")


def start_state(rng, spec, h, n, dtype, first):
    """Fresh (zero) buffers at step 1; at a later first step, buffers as a
    run would leave them, signed zeros and subnormals included."""
    st = {}
    for k in spec.buffers(h):
        if first == 1:
            st[k] = np.zeros(n, dtype)
            continue
        a = rng.standard_normal(n) * 0.1
        if k in ("exp_avg_sq", "exp_inf"):
            a = np.abs(a) + 1e-3
        a = a.astype(dtype)
        a[rng.random(n) < 0.02] = np.finfo(dtype).smallest_subnormal
        a[rng.random(n) < 0.02] = 0.0
        if k == "exp_avg":
            a[rng.random(n) < 0.02] = -0.0
        st[k] = a
    return st


def run_reference(spec, h, p, st, grads, first, s):
    for t, g in enumerate(grads, first):
        if s is not None:
            st.update(s)
        with np.errstate(all="ignore"):
            spec.update(p, g, st, t, h)
        if s is not None:
            s = spec.advance(h, t, s)
    for k in list(st):
        if not isinstance(st[k], np.ndarray):
            del st[k]


def run_kernel(spec, h, p, st, grads, first, s, n_threads):
    for t, g in enumerate(grads, first):
        g_before = g.copy()
        kernel_step(spec, h, t, p, g, st, s, n_threads=n_threads)
        assert_bitwise(g, g_before, "the kernel wrote the gradient")
        if s is not None:
            s = spec.advance(h, t, s)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_kernel_bitwise_equal_to_reference(case, dtype, n_threads, isa, threshold):
    name, kw = CASES[case]
    spec = SPEC[name]
    h = hyper(name, kw)
    code = _kernels.ALGOS[spec.kernel]
    limit = _kernels.get_threshold(code, 0 if dtype == np.float32 else 1)
    sizes = sorted({*SIZES, limit - 1, limit, limit + 1})
    if n_threads == 2:
        threshold(8)   # split from 8 elements on; the fixture restores the thresholds
    for first, n_steps in STARTS:
        for n in sizes:
            steps = n_steps
            if n > 100000:           # the large size: the first 3 steps only (time)
                if first != 1:
                    continue
                steps = 3
            rng = np.random.default_rng([case, n, first, np.dtype(dtype).itemsize])
            p0 = rng.standard_normal(n).astype(dtype)
            p0[rng.random(n) < 0.02] = -0.0
            p0[rng.random(n) < 0.02] = np.finfo(dtype).smallest_subnormal
            grads = [hostile_grad(rng, n, dtype) for _ in range(steps)]
            st0 = start_state(rng, spec, h, n, dtype, first)
            s = scalar_state(spec, h, first)
            p_ref, st_ref = p0.copy(), {k: v.copy() for k, v in st0.items()}
            run_reference(spec, h, p_ref, st_ref, grads, first, s)
            p_k, st_k = p0.copy(), {k: v.copy() for k, v in st0.items()}
            run_kernel(spec, h, p_k, st_k, grads, first, s, n_threads)
            where = f"{name} {kw} n={n} steps {first}..{first + steps - 1}"
            assert_same_bits(p_k, p_ref, f"{where}: parameter")
            assert st_k.keys() == st_ref.keys()
            for k in st_ref:
                assert_same_bits(st_k[k], st_ref[k], f"{where}: {k}")


def test_the_cases_reach_every_kernel_variant():
    """RAdam's rectified and unrectified steps, and the bias corrections that
    round to 1 (the kernels skip those divisions), are all exercised above."""
    seen = set()
    for name, kw in CASES:
        h = hyper(name, kw)
        for first, steps in STARTS:
            for t in range(first, first + steps):
                if name == "RAdam":
                    seen.add(("rectified", radam.rectification(h, t)[0]))
                    seen.add(("bc1_one", np.float32(1 - h["betas"][0] ** t) == 1))
                if name == "NAdam":
                    seen.add(("bc2_one", np.float32(1 - h["betas"][1] ** t) == 1))
    assert seen == {(k, v) for k in ("rectified", "bc1_one", "bc2_one") for v in (False, True)}
    assert [t for t in range(1, 9) if radam.rectification(hyper("RAdam", {}), t)[0]] == [6, 7, 8]


def test_the_specs_match_the_kernel_registry():
    for name in ("NAdam", "RAdam", "Adamax", "Lion"):
        spec = SPEC[name]
        info = _kernels.ALGORITHMS[spec.kernel]
        assert info["buffers"][:2] == ("p", "g") or list(info["buffers"][:2]) == ["p", "g"]
        assert set(spec.all_buffers) == set(info["buffers"][2:])
