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


# (parameter dtype, gradient dtype, precision options): the staging layer's rows
PRECISIONS = [("bfloat16", "bfloat16", {}), ("float16", "float16", {"master_weights": True}),
              ("bfloat16", "bfloat16", {"stochastic_rounding": True, "seed": 3}),
              ("float32", "bfloat16", {"state_dtype": "bfloat16", "stochastic_rounding": True}),
              ("float64", "float32", {"grad_cast": "same_kind"})]


@pytest.mark.parametrize("prec", range(len(PRECISIONS)),
                         ids=[f"{p}-{g}-{'-'.join(kw) or 'default'}" for p, g, kw in PRECISIONS])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_layouts_with_precision_bitwise(isa, prec, n_threads, rng):
    """Staged rows (16-bit parameters, master weights, stochastic rounding,
    16-bit state, cast gradients) in every layout, with strided gradients,
    equal the reference on the same layouts; stochastic rounding's element
    index is the position in the parameter's memory."""
    from adaptopt import _precision
    pname, gname, kw = PRECISIONS[prec]
    pdt, gdt = _precision.numpy_dtype(pname), _precision.numpy_dtype(gname)
    shape = (67, 301)
    p0 = make_grad(rng, shape, np.float32).astype(pdt)
    gs = [make_grad(rng, shape, np.float32).astype(gdt) for _ in range(3)]
    for gname_ in ("C", "F", "slice", "broadcast"):
        grads = [grad_layouts(g)[gname_] for g in gs]
        for name in ("C", "F", "T", "reversed"):
            def make_p(a, name=name):
                return layouts(a)[name]
            want, oref = _run(ref.AdamW, p0, grads, make_p, 1, **kw)
            p, opt = _run(adaptopt.AdamW, p0, grads, make_p, n_threads, **kw)
            assert p.strides == make_p(p0.copy()).strides
            assert_bitwise(p, want, f"{name} / {gname_}")
            for k, v in opt.state[0].items():
                if isinstance(v, np.ndarray):
                    assert_bitwise(v, oref.state[0][k], f"{name} / {gname_}: {k}")
                    assert v.strides == tuple(s // p.itemsize * v.itemsize
                                              for s in p.strides), (name, k)
            if not kw.get("stochastic_rounding") and name != "C":
                same, _ = _run(adaptopt.AdamW, p0, grads, lambda a: a, n_threads, **kw)
                assert_bitwise(np.ascontiguousarray(p), same, "the layout changes no value")


def test_int8_state_in_another_layout_is_float32(rng):
    p = np.asfortranarray(make_grad(rng, (128, 64), np.float32))
    opt = adaptopt.Adam([p], state_dtype="int8")
    opt.step([make_grad(rng, p.shape, np.float32)])
    assert opt.state[0]["exp_avg"].dtype == np.float32
    assert opt.state[0]["exp_avg"].strides == p.strides


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


@pytest.mark.parametrize("prec", [0, 1, 2])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_subsets_bitwise_and_cached(n_threads, prec, rng):
    from adaptopt import _precision
    pname, gname, kw = PRECISIONS[prec]
    pdt, gdt = _precision.numpy_dtype(pname), _precision.numpy_dtype(gname)
    n = 16
    ps = [make_grad(rng, (40,), np.float32).astype(pdt) for _ in range(n)]
    qs = [p.copy() for p in ps]
    fast = adaptopt.Adam(ps, n_threads=n_threads, **kw)
    slow = ref.Adam(qs, **kw)
    general = 0
    for t in range(120):
        gs = [None] * n
        for i in rng.choice(n, 3, replace=False) if t >= 6 else range(3 * t, 3 * t + 3):
            gs[i % n] = make_grad(rng, (40,), np.float32).astype(gdt)
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


@pytest.mark.parametrize("grad", ["same", "contiguous", "expanded"])
def test_torch_bf16_channels_last_equals_fused(grad):
    """A bfloat16 channels_last parameter with strided gradients: the same
    bits as torch's fused Adam on the same tensors (NUMERICS.md: fused
    rounds once per step, as the staging layer does)."""
    torch = pytest.importorskip("torch")
    import adaptopt.torch as aot
    torch.manual_seed(1)
    p0 = torch.randn(4, 3, 5, 5).to(torch.bfloat16, memory_format=torch.channels_last)
    pa = p0.clone(memory_format=torch.preserve_format).requires_grad_()
    pb = p0.clone(memory_format=torch.preserve_format).requires_grad_()
    oa, ob = aot.AdamW([pa], lr=0.01), torch.optim.AdamW([pb], lr=0.01, fused=True)
    for _ in range(4):
        g = torch.randn(p0.shape).to(torch.bfloat16)
        g = {"same": torch.empty_like(pa).copy_(g), "contiguous": g,
             "expanded": g[..., :1].expand(p0.shape)}[grad]
        pa.grad, pb.grad = g, torch.empty_like(pb).copy_(g)  # torch's in p's layout
        oa.step()
        ob.step()
        assert torch.equal(pa.detach().view(torch.int16), pb.detach().view(torch.int16))
    assert oa.state[pa]["exp_avg"].stride() == p0.stride()
    assert oa.state[pa]["exp_avg"].dtype == torch.bfloat16


def test_torch_bf16_subsets_equal_fused():
    """Random subsets of bfloat16 parameters (rows of the staging layer) step
    as torch's fused AdamW does, bit for bit."""
    torch = pytest.importorskip("torch")
    import adaptopt.torch as aot
    gen = torch.Generator().manual_seed(2)
    p0 = [torch.randn(300, generator=gen).to(torch.bfloat16) for _ in range(12)]
    pa = [p.clone().requires_grad_() for p in p0]
    pb = [p.clone().requires_grad_() for p in p0]
    oa, ob = aot.AdamW(pa, lr=0.01), torch.optim.AdamW(pb, lr=0.01, fused=True)
    for t in range(40):
        pick = torch.randperm(12, generator=gen)[:3].tolist() if t >= 4 else range(3 * t, 3 * t + 3)
        for i in range(12):
            g = torch.randn(300, generator=gen).to(torch.bfloat16) if i in pick else None
            pa[i].grad, pb[i].grad = g, None if g is None else g.clone()
        oa.step()
        ob.step()
    for a, b in zip(pa, pb):
        assert torch.equal(a.detach().view(torch.int16), b.detach().view(torch.int16))


def test_torch_amp_scale_with_expanded_grad_refused():
    torch = pytest.importorskip("torch")
    import adaptopt.torch as aot
    p = torch.zeros(4, 5, requires_grad=True)
    opt = aot.Adam([p])
    p.grad = torch.ones(5).expand(4, 5)
    opt.grad_scale = torch.tensor(2.0)
    with pytest.raises(ValueError, match="expanded|stride 0"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(4, 5))


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
