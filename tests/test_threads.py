"""Concurrency: the GIL is released in the kernels."""
import threading
import tracemalloc

import numpy as np
import pytest

import adaptopt
from adaptopt import reference

from conftest import assert_bitwise, make_grad


def trajectory(name, seed, steps=30, n=200_000, **kw):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32)
    grads = [make_grad(rng, (n,), np.float32) for _ in range(steps)]
    return p, grads


def test_two_optimizers_in_two_threads_equal_sequential():
    runs = {}
    for mode in ("sequential", "threads"):
        data = [trajectory("Adam", s) for s in (1, 2)]
        opts = [adaptopt.Adam([p], n_threads=1) for p, _ in data]

        def work(k):
            for g in data[k][1]:
                opts[k].step([g])

        if mode == "sequential":
            work(0)
            work(1)
        else:
            ts = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        runs[mode] = [p for p, _ in data]
    for a, b in zip(runs["sequential"], runs["threads"]):
        assert_bitwise(a, b)


def test_one_optimizer_stepped_from_two_threads_is_serialised():
    """Each step is atomic: after N steps from two threads the result is
    that of N steps in some order; with identical gradients, any order
    gives the same bits as N sequential steps."""
    n, steps = 100_000, 40
    g = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    p = np.zeros(n, np.float32)
    opt = adaptopt.Adam([p], n_threads=1)

    def work():
        for _ in range(steps // 2):
            opt.step([g])

    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q = np.zeros(n, np.float32)
    ref = reference.Adam([q])
    for _ in range(steps):
        ref.step([g])
    assert opt.state[0]["step"] == steps
    assert_bitwise(p, q)
    assert_bitwise(opt.state[0]["exp_avg_sq"], ref.state[0]["exp_avg_sq"])


@pytest.mark.parametrize("name, kw", [("Adam", {"amsgrad": True}), ("AdamW", {}),
                                      ("Adagrad", {}), ("RMSprop", {"momentum": 0.9, "centered": True}),
                                      ("SGD", {"momentum": 0.9})])
def test_no_allocation_proportional_to_parameters(name, kw):
    params = [np.zeros(50_000, np.float32), np.zeros(30_000), np.zeros((100, 100), np.float32)]
    grads = [np.ones_like(p) for p in params]
    opt = getattr(adaptopt, name)(params, **kw)
    opt.step(grads)  # state is allocated on the first step
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            opt.step(grads)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 4096, f"{peak} bytes traced during 1000 steps"


def test_large_state_buffers_are_staggered_and_bitwise_neutral():
    """State buffers of >= 32 MiB start at different offsets in a page than
    the parameter (to avoid set/bank conflicts); the update is unchanged."""
    from adaptopt import _base
    n = _base.STAGGER_MIN_BYTES // 4 + 1001
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]
    p, q = p0.copy(), p0.copy()
    fast, ref = adaptopt.Adam([p], amsgrad=True), reference.Adam([q], amsgrad=True)
    for g in grads:
        fast.step([g])
        ref.step([g])
    assert_bitwise(p, q)
    offsets = {a.__array_interface__["data"][0] % 4096
               for a in [p] + [v for v in fast.state[0].values() if isinstance(v, np.ndarray)]}
    assert len(offsets) == 4
    for k, v in ref.state[0].items():
        if k != "step":
            assert_bitwise(fast.state[0][k], v)
