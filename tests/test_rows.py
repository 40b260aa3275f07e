"""Optimizer.step_rows: row-wise (embedding-table) steps, lazy and exact.

The kernel (csrc/rows.c) against the NumPy twin (adaptopt._rows), bit for
bit on every ISA and thread count; the semantics against independent
statements (lazy: untouched rows are untouched; duplicates summed left to
right; exact: the closed form equals dense zero-gradient steps for SGD);
bad inputs raise naming the argument and change nothing.
"""
import math

import numpy as np
import pytest
from conftest import assert_bitwise, assert_same_state, make_grad

import adaptopt
import adaptopt.reference as ref

CASES = [
    ("Adam", {}), ("Adam", {"amsgrad": True, "maximize": True}),
    ("Adam", {"weight_decay": 0.1}),
    ("AdamW", {"betas": (0.5, 0.9)}), ("Adagrad", {"lr_decay": 0.01}),
    ("Adagrad", {"weight_decay": 0.1}),
    ("SGD", {}), ("SGD", {"momentum": 0.9, "dampening": 0.1}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.5, "centered": True}),
]
EXACT_OK = [c for c in CASES if c[1].get("weight_decay", 0) == 0 or c[0] == "AdamW"]


def _calls(rng, dtype, n_rows, cols, steps, n):
    out = []
    for _ in range(steps):
        rows = rng.integers(0, n_rows, size=n)
        rows[: n // 4] = rows[n // 4: 2 * (n // 4)]  # duplicates, scattered
        rng.shuffle(rows)
        out.append((rows, make_grad(rng, (n, cols), dtype)))
    return out


def _run(cls, kw, p0, calls, exact, n_threads):
    p = p0.copy()
    opt = cls([p], n_threads=n_threads, **kw)
    with np.errstate(all="ignore"):
        for rows, g in calls:
            opt.step_rows(0, rows, g, exact=exact)
    return p, opt


@pytest.mark.parametrize("name,kw", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_lazy_bitwise_equal_to_reference(name, kw, dtype, n_threads, isa, threshold, rng):
    threshold(1)  # every call threaded when n_threads = 2
    p0 = rng.standard_normal((40, 19)).astype(dtype)
    calls = _calls(rng, dtype, 40, 19, 5, 24)
    pf, of = _run(getattr(adaptopt, name), kw, p0, calls, False, n_threads)
    pr, orf = _run(getattr(ref, name), kw, p0, calls, False, None)
    assert_bitwise(pf, pr, "params")
    assert_same_state(of, orf)


@pytest.mark.parametrize("name,kw", EXACT_OK, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_exact_bitwise_equal_to_reference(name, kw, dtype, n_threads, isa, threshold, rng):
    threshold(1)
    p0 = rng.standard_normal((30, 17)).astype(dtype)
    calls = _calls(rng, dtype, 30, 17, 8, 8)
    pf, of = _run(getattr(adaptopt, name), kw, p0, calls, True, n_threads)
    pr, orf = _run(getattr(ref, name), kw, p0, calls, True, None)
    assert_bitwise(pf, pr, "params")
    assert_same_state(of, orf)
    assert of.state[0]["row_step_at"] == 8


def test_wide_rows_and_single_rows(isa, rng):
    """Rows wider than a vector, one column, and one row touched."""
    for cols in (1, 3, 33, 257):
        p0 = rng.standard_normal((9, cols)).astype(np.float32)
        calls = [(np.array([4]), make_grad(rng, (1, cols), np.float32)),
                 (np.array([8, 0, 8]), make_grad(rng, (3, cols), np.float32))]
        pf, of = _run(adaptopt.Adam, {}, p0, calls, True, 2)
        pr, orf = _run(ref.Adam, {}, p0, calls, True, None)
        assert_bitwise(pf, pr, f"cols={cols}")
        assert_same_state(of, orf)


def test_lazy_touches_only_given_rows_and_equals_a_dense_step_of_those_rows(rng):
    p = rng.standard_normal((20, 5)).astype(np.float32)
    q = p.copy()
    a = adaptopt.Adam([p], lr=0.1)
    rows = np.array([3, 11, 7])
    g = rng.standard_normal((3, 5)).astype(np.float32)
    a.step_rows(0, rows, g)
    untouched = np.setdiff1d(np.arange(20), rows)
    assert_bitwise(p[untouched], q[untouched])
    assert not a.state[0]["exp_avg"][untouched].any()
    sub = q[rows].copy()  # a dense step of the touched rows alone
    adaptopt.Adam([sub], lr=0.1).step([g])
    assert_bitwise(p[rows], sub)


def test_duplicates_summed_left_to_right_in_call_order():
    p = np.zeros((4, 1), dtype=np.float32)
    opt = adaptopt.SGD([p], lr=1.0)
    big, small = np.float32(1e8), np.float32(1.0)
    g = np.array([[big], [small], [-big]], dtype=np.float32)
    opt.step_rows(0, [2, 2, 2], g)
    assert p[2, 0] == -((big + small) + -big)  # 0.0 in float32: the order is fixed
    p[...] = 0
    opt.step_rows(0, [2, 2, 2], g[[0, 2, 1]])
    assert p[2, 0] == -((big + -big) + small)  # -1.0


def test_exact_sgd_momentum_equals_dense_zero_gradient_steps():
    """SGD's catch-up is the closed form of the steps a row skipped."""
    p = np.ones((3, 2), dtype=np.float64)
    q = p.copy()
    a = adaptopt.SGD([p], lr=0.1, momentum=0.5)
    b = adaptopt.SGD([q], lr=0.1, momentum=0.5)
    g = np.array([[1.0, -2.0]])
    a.step_rows(0, [1], g, exact=True)
    b.step([np.vstack([np.zeros((1, 2)), g, np.zeros((1, 2))])])
    for _ in range(4):
        a.step_rows(0, [0], np.zeros((1, 2)), exact=True)
        b.step([np.zeros((3, 2))])
    a.step_rows(0, [1], g, exact=True)
    b.step([np.vstack([np.zeros((1, 2)), g, np.zeros((1, 2))])])
    np.testing.assert_allclose(p[1], q[1], rtol=1e-14)
    np.testing.assert_allclose(a.state[0]["momentum_buffer"][1], b.state[0]["momentum_buffer"][1],
                               rtol=1e-14)
    assert list(a.state[0]["row_step"]) == [5, 6, 0]


def test_exact_adam_moments_decay_as_stated():
    p = np.zeros((2, 1), dtype=np.float64)
    opt = adaptopt.Adam([p], betas=(0.9, 0.99))
    opt.step_rows(0, [0], np.array([[1.0]]), exact=True)
    m1, v1 = opt.state[0]["exp_avg"][0, 0], opt.state[0]["exp_avg_sq"][0, 0]
    for _ in range(3):
        opt.step_rows(0, [1], np.array([[1.0]]), exact=True)
    opt.step_rows(0, [0], np.array([[0.0]]), exact=True)  # k = 3 skipped, then a zero gradient
    m = m1 * math.pow(0.9, 3)
    assert opt.state[0]["exp_avg"][0, 0] == m + (1 - 0.9) * (0 - m)  # then the step's lerp
    assert opt.state[0]["exp_avg_sq"][0, 0] == (v1 * math.pow(0.99, 3)) * 0.99


def test_a_dense_step_counts_as_every_rows_step(rng):
    """After a dense step(), exact catch-up starts from that step."""
    p = np.ones((3, 2), dtype=np.float64)
    opt = adaptopt.Adam([p])
    opt.step_rows(0, [0], np.ones((1, 2)), exact=True)
    opt.step([np.ones((3, 2))])
    m = opt.state[0]["exp_avg"].copy()
    opt.step_rows(0, [2], np.zeros((1, 2)), exact=True)
    assert opt.state[0]["exp_avg"][2, 0] == m[2, 0] + (1 - 0.9) * (0 - m[2, 0])  # k = 0
    assert list(opt.state[0]["row_step"]) == [2, 2, 3]


def test_step_counts_and_dense_steps_interleave(rng):
    p = rng.standard_normal((6, 3))
    q = p.copy()
    a, b = adaptopt.Adagrad([p]), ref.Adagrad([q])
    for opt in (a, b):
        opt.step_rows(0, [1, 4], np.ones((2, 3)))
        opt.step([np.full((6, 3), 0.5)])
        opt.step_rows(0, np.array([], dtype=np.int64), np.zeros((0, 3)))
        opt.step_rows(0, np.array([5], dtype=np.uint8), np.ones((1, 3)))
    assert a.state[0]["step"] == 4
    assert_bitwise(p, q)
    assert_same_state(a, b)


def test_state_dict_round_trip_keeps_row_counters(rng):
    p = rng.standard_normal((5, 2))
    opt = adaptopt.RMSprop([p], momentum=0.9)
    opt.step_rows(0, [1, 3], np.ones((2, 2)), exact=True)
    sd = opt.state_dict()
    other = adaptopt.RMSprop([p.copy()], momentum=0.9)
    other.load_state_dict(sd)
    assert other.state[0]["row_step_at"] == 1
    assert list(other.state[0]["row_step"]) == [0, 1, 0, 1, 0]


def _snapshot(opt, p):
    return p.copy(), {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                          for k, v in st.items()} for i, st in opt.state.items()}


def _unchanged(opt, p, snap):
    assert_bitwise(p, snap[0])
    assert opt.state.keys() == snap[1].keys()
    for i, st in snap[1].items():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(opt.state[i][k], v)
            else:
                assert opt.state[i][k] == v


BAD = [
    (lambda p: (0, [1, 9], np.ones((2, 3))), ValueError, r"rows\[1\] is 9: out of range"),
    (lambda p: (0, [1, -1], np.ones((2, 3))), ValueError, r"rows\[1\] is -1.*>= 0"),
    (lambda p: (0, [1.0], np.ones((1, 3))), TypeError, "rows must be .*integer"),
    (lambda p: (0, [True], np.ones((1, 3))), TypeError, "rows must be .*integer"),
    (lambda p: (0, [[1]], np.ones((1, 3))), ValueError, "rows must be 1-D"),
    (lambda p: (0, [1], np.ones((1, 3), np.float32)), TypeError, "row_grads has dtype float32"),
    (lambda p: (0, [1], np.ones((2, 3))), ValueError, r"row_grads has shape \(2, 3\)"),
    (lambda p: (0, [1], np.ones((1, 4))), ValueError, r"row_grads has shape \(1, 4\)"),
    (lambda p: (0, [1], np.ones((3, 1))[:1].T.copy().T), ValueError, "row_grads has shape"),
    (lambda p: (0, [1, 2], np.ones((3, 2)).T), ValueError, "row_grads must be C-contiguous"),
    (lambda p: (0, [1], [[1.0, 1.0, 1.0]]), TypeError, "row_grads must be a NumPy array"),
    (lambda p: (0, [1], p[2:3]), ValueError, r"row_grads shares memory with params\[0\]"),
    (lambda p: (1, [1], np.ones((1, 3))), ValueError, "param_index is 1"),
    (lambda p: (-1, [1], np.ones((1, 3))), ValueError, "param_index is -1"),
    (lambda p: ("0", [1], np.ones((1, 3))), TypeError, "param_index must be an int"),
]


@pytest.mark.parametrize("make,exc,msg", BAD)
def test_bad_inputs_raise_naming_the_argument_and_change_nothing(make, exc, msg, rng):
    p = rng.standard_normal((5, 3))
    opt = adaptopt.Adam([p])
    opt.step_rows(0, [0, 2], np.ones((2, 3)), exact=True)
    snap = _snapshot(opt, p)
    args = make(p)
    with pytest.raises(exc, match=msg):
        opt.step_rows(*args)
    _unchanged(opt, p, snap)


def test_refusals_change_nothing(rng):
    v = rng.standard_normal(5)
    opt = adaptopt.Adam([v])
    with pytest.raises(ValueError, match=r"params\[0\] has shape \(5,\).*2-D"):
        opt.step_rows(0, [1], np.ones((1, 1)))
    p = rng.standard_normal((5, 3))
    snap = p.copy()
    for cls, kw in ((adaptopt.Adam, {"weight_decay": 0.1}), (adaptopt.SGD, {"momentum": 1.0}),
                    (adaptopt.Adagrad, {"weight_decay": 0.1})):
        opt = cls([p], **kw)
        with pytest.raises(ValueError, match="exact=True"):
            opt.step_rows(0, [1], np.ones((1, 3)), exact=True)
        assert 0 not in opt.state or opt.state[0]["step"] == 0
    assert_bitwise(p, snap)
    with pytest.raises(TypeError, match="exact must be a bool"):
        adaptopt.Adam([p]).step_rows(0, [1], np.ones((1, 3)), exact=1)
    with pytest.raises(TypeError, match="step_rows is not available for Lion"):
        adaptopt.Lion([p]).step_rows(0, [1], np.ones((1, 3)))
    assert_bitwise(p, snap)


def test_corrupted_row_counters_are_refused(rng):
    p = rng.standard_normal((4, 2))
    opt = adaptopt.Adam([p])
    opt.step_rows(0, [0], np.ones((1, 2)), exact=True)
    opt.state[0]["row_step"][0] = 7
    snap = _snapshot(opt, p)
    with pytest.raises(ValueError, match=r"state\[0\]\['row_step'\]\[0\] is 7"):
        opt.step_rows(0, [0], np.ones((1, 2)), exact=True)
    _unchanged(opt, p, snap)
    opt.state[0]["row_step"] = np.zeros(4, dtype=np.int32)
    with pytest.raises(ValueError, match="row_step'.*int64"):
        opt.step_rows(0, [0], np.ones((1, 2)))


def test_c_entry_rejects_bad_indices_and_writes_nothing():
    """adaptopt_rows_step re-checks what Python checked (defence in depth)."""
    from adaptopt import _kernels
    spec = adaptopt.SGD.spec
    p = np.zeros((4, 3), dtype=np.float64)
    g = np.ones((2, 3), dtype=np.float64)
    ptr = np.array([p.ctypes.data, g.ctypes.data, 0], dtype=np.uint64)
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    flags, fixed = spec.fixed_scalars(spec.checked(spec.defaults(), "SGD"))
    fixed = [0.0 if v is None else v for v in fixed]

    def call(rows, order=None, starts=None, row_step=None, catchup=None, n_grads=2, t=1):
        return _kernels.rows_step(spec.code, 1, 4, 3, ptr, n_grads, rows, order, starts,
                                  row_step, t, catchup, fixed, flags, 1)

    cu = ([1.0, 1.0, 1.0], -1, 0.0, 0.0)
    for rc in (call(i64(0, 4)), call(i64(-1, 2)),                      # rows out of range
               call(i64(1), i64(0, 2), i64(0, 2), n_grads=2),           # order out of range
               call(i64(1), i64(0, 1), i64(0, 1), n_grads=2),           # starts do not end at n
               call(i64(1, 2), i64(0, 1), i64(0, 0, 2)),                # an empty group
               call(i64(1, 2), i64(0, 1)),                              # order without starts
               call(i64(1, 2), row_step=i64(0, 5, 0, 0), catchup=cu),   # a row ahead of t
               call(i64(1, 2), t=0)):
        assert rc == _kernels.EINVAL
    assert not p.any()
    with pytest.raises(ValueError, match="rows"):
        call(np.array([1, 2], dtype=np.int32))
    assert call(i64(1, 2)) == _kernels.OK and p[1:3].all() and not p[[0, 3]].any()


def test_checkpoint_round_trip_keeps_row_counters(tmp_path, rng):
    p = rng.standard_normal((5, 2))
    opt = adaptopt.Adam([p])
    opt.step_rows(0, [4, 1], np.ones((2, 2)), exact=True)
    opt.save(tmp_path / "c.npz")
    other = adaptopt.Adam([p.copy()])
    other.load(tmp_path / "c.npz")
    assert other.state[0]["row_step_at"] == 1
    assert other.state[0]["row_step"].dtype == np.int64
    assert list(other.state[0]["row_step"]) == [0, 1, 0, 0, 1]
