"""Issue 12: any dense parameter layout, gradients of any strides, gradient
objects np.asarray views, parameter subsets, the contention guard.

Against the NumPy reference: bit for bit, on every ISA and 1 / 2 threads.
Against torch.optim (single-tensor path): within 4 ULP of the parameter per
step, the bound test_vs_torch states for Adam."""
import numpy as np
import pytest
from conftest import assert_bitwise, make_grad

import adaptopt
import adaptopt.reference as ref
from adaptopt import _kernels


def layouts(a):
    """a (2-D, C order) in the dense layouts users hand over."""
    return {"C": a, "F": np.asfortranarray(a), "T": np.ascontiguousarray(a.T).T,
            "reversed": np.ascontiguousarray(a[::-1])[::-1],
            "both reversed": np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]}


def grad_layouts(g):
    """g's values in other layouts: dense in other orders, stride 0, slices, read-only."""
    wide = np.zeros((g.shape[0], 2 * g.shape[1]), g.dtype)
    wide[:, ::2] = g
    ro = g.copy()
    ro.flags.writeable = False
    return {"C": g, "F": np.asfortranarray(g), "reversed": np.ascontiguousarray(g[::-1])[::-1],
            "slice": wide[:, ::2], "read-only": ro,
            "broadcast": np.broadcast_to(g[:1], g.shape)}


def _run(cls, p0, grads, make_p, n_threads, **hyper):
    p = make_p(p0.copy())
    p[...] = p0
    opt = cls([p], lr=0.01, n_threads=n_threads, **hyper)
    for g in grads:
        opt.step([g])
    return p, opt


@pytest.mark.parametrize("algo, hyper", [("Adam", {}), ("SGD", {"momentum": 0.9}),
                                         ("AdamW", {"amsgrad": True})])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_layouts_bitwise(isa, algo, hyper, n_threads, rng):
    shape = (67, 301)  # 20K elements: above the 2-thread threshold
    p0 = make_grad(rng, shape, np.float32)
    gs = [make_grad(rng, shape, np.float32) for _ in range(3)]
    for gname in grad_layouts(gs[0]):
        grads = [grad_layouts(g)[gname] for g in gs]
        want, _ = _run(getattr(ref, algo), p0, [np.ascontiguousarray(g) for g in grads],
                       lambda a: a, 1, **hyper)
        for name, make_p in [(k, (lambda k: lambda a: layouts(a)[k])(k)) for k in layouts(p0)]:
            p, opt = _run(getattr(adaptopt, algo), p0, grads, make_p, n_threads, **hyper)
            assert p.strides == make_p(p0.copy()).strides
            assert_bitwise(np.ascontiguousarray(p), want, f"{name} / {gname}")
            for k, v in opt.state[0].items():
                if isinstance(v, np.ndarray):
                    assert v.strides == p.strides, (name, k)


def test_transposed_3d_and_reference(rng):
    p0 = make_grad(rng, (5, 6, 7), np.float64)
    pa = np.ascontiguousarray(p0.transpose(2, 0, 1)).transpose(1, 2, 0)
    pb = pa.copy(order="K")
    assert pb.strides == pa.strides
    oa, ob = adaptopt.Adam([pa]), ref.Adam([pb])
    for _ in range(3):
        g = make_grad(rng, p0.shape, np.float64)
        oa.step([g.transpose(0, 1, 2)])
        ob.step([g])
    assert_bitwise(np.ascontiguousarray(pa), np.ascontiguousarray(pb))
    sd = oa.state_dict()
    oc = adaptopt.Adam([pa.copy(order="K")])
    oc.load_state_dict(sd)  # a C-order copy comes back in the parameter's layout
    assert oc.state[0]["exp_avg"].strides == pa.strides


def test_bad_layouts_change_nothing(rng):
    big = np.zeros((4, 10), np.float32)
    with pytest.raises(ValueError, match=r"params\[0\] is not dense"):
        adaptopt.Adam([big[:, ::2]])
    p = np.asfortranarray(make_grad(rng, (4, 5), np.float32))
    before = p.copy()
    opt = adaptopt.Adam([p])
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[0\]"):
        opt.step([p.T.T])
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        opt.step([np.zeros((5, 4), np.float32)])
    opt.step([np.ones((4, 5), np.float32)])
    st = opt.state[0]
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\].*strides"):
        st["exp_avg"] = np.zeros((4, 5), np.float32)  # C order: not the parameter's
        opt.step([np.ones((4, 5), np.float32)])
    assert not np.array_equal(p, before)  # the one good step ran, and only it
    after = p.copy()
    with pytest.raises(ValueError):
        opt.step([np.ones((4, 5), np.float32)])
    assert_bitwise(p, after)


def test_gradient_objects(rng):
    p0 = make_grad(rng, (300,), np.float32)
    g = make_grad(rng, (300,), np.float32)
    want, _ = _run(ref.Adam, p0, [g, g], lambda a: a, 1)
    got, _ = _run(adaptopt.Adam, p0, [memoryview(g), memoryview(g)], lambda a: a, 1)
    assert_bitwise(got, want)
    opt = adaptopt.Adam([np.zeros(3, np.float32)])
    with pytest.raises(TypeError, match=r"grads\[0\] must be a NumPy array"):
        opt.step([[1.0, 2.0, 3.0]])  # a list needs a copy
    assert opt.state == {}


def test_jax_gradient(rng):
    jnp = pytest.importorskip("jax.numpy")
    p0 = make_grad(rng, (64,), np.float32)
    g = make_grad(rng, (64,), np.float32)
    want, _ = _run(ref.Adam, p0, [g, g], lambda a: a, 1)
    got, _ = _run(adaptopt.Adam, p0, [jnp.asarray(g), jnp.asarray(g)], lambda a: a, 1)
    assert_bitwise(got, want)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_subsets_bitwise_and_cached(n_threads, rng):
    n = 16
    ps = [make_grad(rng, (40,), np.float32) for _ in range(n)]
    qs = [p.copy() for p in ps]
    fast = adaptopt.Adam(ps, n_threads=n_threads)
    slow = ref.Adam(qs)
    general = 0
    for t in range(120):
        gs = [None] * n
        for i in rng.choice(n, 3, replace=False) if t >= 6 else range(3 * t, 3 * t + 3):
            gs[i % n] = make_grad(rng, (40,), np.float32)
        plans = len(fast._plans)
        fast.step(gs)
        slow.step(gs)
        general += t >= 20 and len(fast._plans) != plans
    for a, b in zip(ps, qs):
        assert_bitwise(a, b)
    assert general == 0  # once every parameter has state, no step builds a plan


def test_guard_same_bits(rng):
    p0 = make_grad(rng, (50000,), np.float32)
    g = make_grad(rng, (50000,), np.float32)
    old = _kernels.set_thread_guard(False)
    try:
        off, _ = _run(adaptopt.Adam, p0, [g, g], lambda a: a, 2)
    finally:
        _kernels.set_thread_guard(old)
    on, _ = _run(adaptopt.Adam, p0, [g, g], lambda a: a, 2)
    assert_bitwise(on, off)
    assert _kernels.set_thread_guard(old) == old


# --- torch --------------------------------------------------------------------
def _ulp_close(a, b, before, ulps=4):
    a, b, before = (x.detach().double().numpy() for x in (a, b, before))
    big = np.maximum(np.abs(before), np.abs(b)).astype(np.float32)
    assert np.all(np.abs(a - b) <= ulps * np.spacing(big))


@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
@pytest.mark.parametrize("grad", ["same", "contiguous", "expanded", "slice"])
def test_torch_layouts(layout, grad):
    torch = pytest.importorskip("torch")
    import adaptopt.torch as aot
    torch.manual_seed(0)
    if layout == "channels_last":
        p0 = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    else:
        p0 = torch.randn(6, 7).t()
    pa = p0.clone(memory_format=torch.preserve_format).requires_grad_()
    pb = p0.clone(memory_format=torch.preserve_format).requires_grad_()
    oa, ob = aot.Adam([pa], lr=0.01), torch.optim.Adam([pb], lr=0.01, foreach=False)
    for _ in range(3):
        g = torch.randn(p0.shape)
        g = {"same": torch.empty_like(pa).copy_(g), "contiguous": g,
             "expanded": g[..., :1].expand(p0.shape),
             "slice": torch.cat([g, g], dim=-1)[..., ::2]}[grad]
        before = pb.detach().clone()
        pa.grad, pb.grad = g, g.clone()
        oa.step()
        ob.step()
        _ulp_close(pa, pb, before)
    assert pa.stride() == p0.stride()
    for k in ("exp_avg", "exp_avg_sq"):
        assert oa.state[pa][k].stride() == p0.stride()
    # state_dict both ways, in torch's layout
    oc = torch.optim.Adam([pb], lr=0.01, foreach=False)
    oc.load_state_dict(oa.state_dict())
    assert oc.state[pb]["exp_avg"].stride() == p0.stride()
    od = aot.Adam([pa], lr=0.01)
    sd = ob.state_dict()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].contiguous()  # another layout
    od.load_state_dict(sd)
    assert od.state[pa]["exp_avg"].stride() == p0.stride()
    pa.grad = torch.ones(p0.shape)
    od.step()


def test_torch_bad_layouts():
    torch = pytest.importorskip("torch")
    import adaptopt.torch as aot
    with pytest.raises(ValueError, match="not dense"):
        aot.Adam([torch.zeros(4, 10)[:, ::2].requires_grad_()])
    p = torch.zeros(4, 5).t().requires_grad_()
    opt = aot.Adam([p])
    p.grad = p.detach().t().t()
    with pytest.raises(ValueError, match="shares memory"):
        opt.step()
    assert not opt.state
