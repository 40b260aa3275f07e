"""adaptopt.torch: the drop-in replacements for torch.optim on CPU.

Compared with torch.optim's single-tensor path (foreach=False), whose
operation order the kernels follow:

* trajectories: a small MLP trained 200 steps on a fixed synthetic
  regression problem from the same initial weights; per parameter tensor
  ``max|a - b| <= RTOL * max|b|`` and per step ``|loss_a - loss_b| <= RTOL *
  |loss_b|``, RTOL = 3e-4 (float32) / 1e-10 (float64);
* one step from identical state: every element of parameters and state
  within ULP_BOUND = 8 units in the last place of the larger operand,
  ``|a - b| / spacing(max(|before|, |a|, |b|, |a - before|, ...))`` (the
  operands of the update: before, after and the update itself; for state
  buffers also the gradient and the weight-decay term);
* state_dict interchange in both directions, lr schedulers, hooks, closure;
* unsupported inputs raise naming the parameter, and change nothing.
"""
import copy
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import adaptopt.torch as aot  # noqa: E402
from adaptopt import _kernels  # noqa: E402

RTOL = {torch.float32: 3e-4, torch.float64: 1e-10}
ULP_BOUND = 8
STEPS = 200
# Learning rates for which the 200-step runs are well conditioned: at larger ones
# some runs reach the edge of stability, where a 1-ULP difference doubles each
# step (torch against itself, perturbed by 1 ULP, diverges the same way).
LR = {"Adam": 3e-3, "AdamW": 3e-3, "Adagrad": 2e-2, "RMSprop": 3e-4, "SGD": 2e-2}
DTYPES = [torch.float32, torch.float64]

CASES = [
    ("Adam", {}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"maximize": True}),
    ("Adam", {"weight_decay": 0.1}),
    ("Adam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True}),
    ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.1, "amsgrad": True, "betas": (0.8, 0.99), "eps": 1e-6,
               "lr": 2e-3}),
    ("Adagrad", {}),
    ("Adagrad", {"lr_decay": 0.01}),
    ("Adagrad", {"initial_accumulator_value": 0.1}),
    ("Adagrad", {"weight_decay": 0.1, "maximize": True, "eps": 1e-8}),
    ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.01}),
    ("RMSprop", {"maximize": True, "weight_decay": 0.01}),
    ("RMSprop", {"alpha": 0.95, "momentum": 0.5, "weight_decay": 0.01, "lr": 2e-4}),
    ("SGD", {}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("SGD", {"momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"momentum": 0.5, "weight_decay": 0.1, "maximize": True}),
]
CASE_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for n, kw in CASES]


# --- helpers ---------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny matmuls: threads only add noise to the run time (results do not depend on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(dtype, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 1))
    return model.to(dtype)


def make_data(dtype, n=256):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)
    w = torch.randn(8, 1, generator=g, dtype=torch.float64)
    y = torch.sin(x @ w) + 0.1 * x[:, :1] ** 2
    y += 0.2 * torch.randn(n, 1, generator=g, dtype=torch.float64)  # a loss floor
    return x.to(dtype), y.to(dtype)


def make_opt(lib, name, params, kw, lr=None):
    kw = {"lr": LR[name], **kw}
    if lr is not None:
        kw["lr"] = lr
    if lib is torch.optim:
        kw["foreach"] = False
    return getattr(lib, name)(params, **kw)


def train(model, opt, data, steps, maximize=False, sched=None):
    x, y = data
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        (-loss if maximize else loss).backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def assert_close_params(ma, mb, dtype, what=""):
    """Per tensor max|a - b| <= RTOL * max|b|."""
    for (name, a), b in zip(ma.named_parameters(), mb.parameters()):
        err = (a - b).abs().max().item() / b.abs().max().item()
        assert err <= RTOL[dtype], f"{what} {name}: relative difference {err:.3g} > {RTOL[dtype]}"


def assert_close_losses(la, lb, dtype):
    la, lb = np.array(la), np.array(lb)
    rel = np.abs(la - lb) / np.abs(lb)
    assert rel.max() <= RTOL[dtype], f"losses differ by {rel.max():.3g} at step {rel.argmax()}"


def ulps(a, b, *operands):
    """|a - b| in ULPs of the largest operand magnitude (elementwise)."""
    mags = torch.stack([t.detach().abs() for t in (a, b) + operands])
    spacing = np.spacing(mags.amax(0).numpy()).astype(np.float64)
    return (a.detach().double() - b.detach().double()).abs().numpy() / spacing


def _dense(t):
    return t.to_dense() if t.layout is not torch.strided else t


def snapshot(opt):
    """Deep copy of parameters, gradients and state, to check nothing changed."""
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    grads = [None if p.grad is None else _dense(p.grad).clone()
             for g in opt.param_groups for p in g["params"]]
    state = {id(p): {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
             for p, st in opt.state.items()}
    return params, grads, state


def assert_unchanged(opt, snap):
    params, grads, state = snap
    all_p = [p for g in opt.param_groups for p in g["params"]]
    for p, before, gb in zip(all_p, params, grads):
        assert torch.equal(p.detach(), before)
        assert (p.grad is None) == (gb is None)
        if gb is not None:
            assert torch.equal(_dense(p.grad), gb)
    assert {id(p) for p in opt.state} == set(state)
    for p, st in opt.state.items():
        assert st.keys() == state[id(p)].keys()
        for k, v in st.items():
            assert torch.equal(v, state[id(p)][k]), k


# --- trajectories ------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_trajectory_matches_torch(case, dtype):
    name, kw = CASES[case]
    data = make_data(dtype)
    mt, ma = make_model(dtype), make_model(dtype)
    init = [p.detach().clone() for p in mt.parameters()]
    maximize = kw.get("maximize", False)
    lt = train(mt, make_opt(torch.optim, name, mt.parameters(), kw), data, STEPS, maximize)
    la = train(ma, make_opt(aot, name, ma.parameters(), kw), data, STEPS, maximize)
    assert_close_params(ma, mt, dtype)
    assert_close_losses(la, lt, dtype)
    # the comparison is not vacuous: training moved the weights and lowered the loss
    moved = max((p.detach() - q).abs().max().item() for p, q in zip(mt.parameters(), init))
    assert moved > 1e-2
    assert lt[-1] < lt[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_one_step_within_ulp_bound(case, dtype):
    """One step from identical (trained) state, identical wide-ranging gradients."""
    name, kw = CASES[case]
    data = make_data(dtype)
    mt = make_model(dtype, seed=case)
    ot = make_opt(torch.optim, name, mt.parameters(), kw)
    train(mt, ot, data, 3, kw.get("maximize", False))
    ma = copy.deepcopy(mt)
    oa = make_opt(aot, name, ma.parameters(), kw)
    oa.load_state_dict(copy.deepcopy(ot.state_dict()))

    gen = torch.Generator().manual_seed(case)
    before = [p.detach().clone() for p in mt.parameters()]
    state_before = [{k: v.clone() for k, v in ot.state[p].items()} for p in mt.parameters()]
    for pt, pa in zip(mt.parameters(), ma.parameters()):
        g = torch.randn(pt.shape, generator=gen, dtype=torch.float64)
        g *= 10.0 ** (torch.rand(pt.shape, generator=gen, dtype=torch.float64) * 4 - 3)
        pt.grad = g.to(dtype)
        pa.grad = g.to(dtype)
    ot.step()
    oa.step()
    wd = kw.get("weight_decay", 0.0)
    worst = 0.0
    for k, (pt, pa, p0, st0) in enumerate(zip(mt.parameters(), ma.parameters(), before,
                                            state_before)):
        d = ulps(pa, pt, p0, pt - p0)
        worst = max(worst, d.max())
        assert d.max() <= ULP_BOUND, f"param {k}: {d.max():.1f} ULP"
        assert oa.state[pa].keys() == ot.state[pt].keys()
        for key, vt in ot.state[pt].items():
            va = oa.state[pa][key]
            if key == "step":
                assert va.item() == vt.item() and va.dtype == vt.dtype
                continue
            ops = (st0[key], pt.grad, wd * p0) if key in st0 else (pt.grad, wd * p0)
            d = ulps(va, vt, *ops)
            assert d.max() <= ULP_BOUND, f"param {k} state {key!r}: {d.max():.1f} ULP"
    assert np.isfinite(worst)


# --- state_dict interchange ---------------------------------------------------
INTERCHANGE = [
    ("Adam", {"amsgrad": True, "weight_decay": 0.01}),
    ("AdamW", {}),
    ("Adagrad", {"lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.5}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
]


def assert_same_state_dict(sa, sb):
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i, st in sb["state"].items():
        assert sa["state"][i].keys() == st.keys(), i
        for k, v in st.items():
            w = sa["state"][i][k]
            assert isinstance(w, torch.Tensor) and w.dtype == v.dtype and w.shape == v.shape
            assert torch.equal(w, v), (i, k)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("direction", ["torch->adaptopt", "adaptopt->torch"])
@pytest.mark.parametrize("name,kw", INTERCHANGE, ids=[n for n, _ in INTERCHANGE])
def test_state_dict_interchange(name, kw, direction, dtype):
    """Train 40 steps with one library, save, load into the other, continue 60:
    the same trajectory as 100 steps with torch.optim alone."""
    data = make_data(dtype)
    ref = make_model(dtype)
    oref = make_opt(torch.optim, name, ref.parameters(), kw)
    lref = train(ref, oref, data, 100)

    first, second = (torch.optim, aot) if direction == "torch->adaptopt" else (aot, torch.optim)
    m1 = make_model(dtype)
    o1 = make_opt(first, name, m1.parameters(), kw)
    l1 = train(m1, o1, data, 40)
    buf = io.BytesIO()
    torch.save(o1.state_dict(), buf)  # a real checkpoint round trip
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)

    m2 = copy.deepcopy(m1)
    o2 = make_opt(second, name, m2.parameters(), kw)
    if second is aot:  # a stale pointer table must not survive load_state_dict
        train(m2, o2, data, 2)
        m2.load_state_dict(m1.state_dict())
    o2.load_state_dict(sd)
    sd2 = o2.state_dict()
    if second is torch.optim:
        sd2["param_groups"][0]["foreach"] = sd["param_groups"][0]["foreach"]
    assert_same_state_dict(sd2, sd)
    l2 = train(m2, o2, data, 60)
    assert_close_params(m2, ref, dtype, direction)
    assert_close_losses(l1 + l2, lref, dtype)
    if name != "SGD":
        assert all(st["step"].item() == 100 for st in o2.state.values())


@pytest.mark.parametrize("name,kw", INTERCHANGE, ids=[n for n, _ in INTERCHANGE])
def test_checkpoint_layout_like_torch(name, kw):
    """The same keys, dtypes and shapes as torch.optim's; step a 0-d float32 tensor."""
    data = make_data(torch.float32)
    mt, ma = make_model(torch.float32), make_model(torch.float32)
    ot = make_opt(torch.optim, name, mt.parameters(), kw)
    oa = make_opt(aot, name, ma.parameters(), kw)
    train(mt, ot, data, 3)
    train(ma, oa, data, 3)
    st, sa = ot.state_dict(), oa.state_dict()
    assert list(sa["param_groups"][0]) == list(st["param_groups"][0])
    assert sa["state"].keys() == st["state"].keys()
    for i in st["state"]:
        assert list(sa["state"][i]) == list(st["state"][i])
        for k, v in st["state"][i].items():
            w = sa["state"][i][k]
            assert (w.dtype, w.shape, w.device) == (v.dtype, v.shape, v.device), (i, k)
            if k == "step":
                assert w.dtype == torch.float32 and w.dim() == 0 and w.item() == 3
            else:
                assert w.is_contiguous()


def test_load_casts_and_makes_contiguous():
    """torch's load casts state to the parameter's dtype; non-contiguous state is copied."""
    data = make_data(torch.float32)
    mt = make_model(torch.float32)
    ot = make_opt(torch.optim, "Adam", mt.parameters(), {})
    train(mt, ot, data, 5)
    sd = copy.deepcopy(ot.state_dict())
    for st in sd["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            v = st[k].double()  # another dtype
            if v.dim() == 2 and min(v.shape) > 1:  # same values, transposed memory layout
                v = v.t().contiguous().t()
                assert not v.is_contiguous()
            st[k] = v
    ma = copy.deepcopy(mt)
    oa = make_opt(aot, "Adam", ma.parameters(), {})
    oa.load_state_dict(sd)
    for pa, pt in zip(ma.parameters(), mt.parameters()):
        for k in ("exp_avg", "exp_avg_sq"):
            v = oa.state[pa][k]
            assert v.dtype == torch.float32 and v.is_contiguous()
            assert torch.equal(v, ot.state[pt][k])  # float32 -> float64 -> float32 is exact
    lt = train(mt, ot, data, 20)
    la = train(ma, oa, data, 20)
    assert_close_params(ma, mt, torch.float32)
    assert_close_losses(la, lt, torch.float32)


def test_load_state_dict_rejects_bad_state_atomically():
    data = make_data(torch.float32)
    m = make_model(torch.float32)
    o = aot.Adam(m.parameters(), lr=1e-2)
    train(m, o, data, 3)
    sd = copy.deepcopy(o.state_dict())
    sd["state"][2]["exp_avg"] = torch.zeros(5)  # wrong shape
    sd["param_groups"][0]["lr"] = 0.5
    snap = snapshot(o)
    with pytest.raises(ValueError, match=r"'exp_avg' must be a tensor of the parameter's shape"):
        o.load_state_dict(sd)
    assert o.param_groups[0]["lr"] == 1e-2
    assert_unchanged(o, snap)
    sd = copy.deepcopy(o.state_dict())
    sd["param_groups"][0]["capturable"] = True  # e.g. a CUDA-graph checkpoint
    with pytest.raises(ValueError, match="capturable=True is not supported"):
        o.load_state_dict(sd)
    assert_unchanged(o, snap)


def test_old_checkpoint_with_number_step():
    """Checkpoints of older torch versions keep 'step' as a number (torch converts it)."""
    data = make_data(torch.float64)
    mt = make_model(torch.float64)
    ot = make_opt(torch.optim, "RMSprop", mt.parameters(), {"momentum": 0.5})
    train(mt, ot, data, 4)
    sd = copy.deepcopy(ot.state_dict())
    for st in sd["state"].values():
        st["step"] = int(st["step"].item())
    ma = copy.deepcopy(mt)
    oa = make_opt(aot, "RMSprop", ma.parameters(), {"momentum": 0.5})
    oa.load_state_dict(sd)
    assert all(isinstance(st["step"], torch.Tensor) and st["step"].item() == 4
               for st in oa.state.values())
    train(mt, ot, data, 10)
    train(ma, oa, data, 10)
    assert_close_params(ma, mt, torch.float64)


# --- lr schedulers, hooks, closure, param groups -----------------------------------
@pytest.mark.parametrize("sched", ["StepLR", "CosineAnnealingLR"])
@pytest.mark.parametrize("name,kw", [("Adam", {}), ("SGD", {"momentum": 0.9}),
                                     ("RMSprop", {"centered": True})])
def test_lr_schedulers(name, kw, sched):
    dtype = torch.float32
    data = make_data(dtype)
    args = {"StepLR": {"step_size": 20, "gamma": 0.5}, "CosineAnnealingLR": {"T_max": 60}}[sched]
    out = []
    for lib in (torch.optim, aot):
        m = make_model(dtype)
        o = make_opt(lib, name, m.parameters(), kw)
        s = getattr(torch.optim.lr_scheduler, sched)(o, **args)
        losses = train(m, o, data, 60, sched=s)
        out.append((m, o, losses))
    (mt, ot, lt), (ma, oa, la) = out
    assert oa.param_groups[0]["lr"] == ot.param_groups[0]["lr"] < LR[name] / 4
    assert_close_params(ma, mt, dtype)
    assert_close_losses(la, lt, dtype)


def test_step_hooks_fire():
    m = make_model(torch.float32)
    o = aot.AdamW(m.parameters())
    calls = []
    h1 = o.register_step_pre_hook(lambda opt, args, kwargs: calls.append(("pre", opt)))
    h2 = o.register_step_post_hook(lambda opt, args, kwargs: calls.append(("post", opt)))
    from torch.optim.optimizer import register_optimizer_step_post_hook
    h3 = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: calls.append(("global", opt)))
    try:
        train(m, o, make_data(torch.float32), 2)
    finally:
        for h in (h1, h2, h3):
            h.remove()
    assert calls == [("pre", o), ("post", o), ("global", o)] * 2
    # state_dict hooks come from the base class too
    seen = []
    o.register_state_dict_post_hook(lambda opt, sd: seen.append(len(sd["state"])))
    o.register_load_state_dict_post_hook(lambda opt: seen.append("loaded"))
    o.load_state_dict(o.state_dict())
    assert seen == [6, "loaded"]


def test_closure_runs_with_grad_enabled_and_returns_loss():
    dtype = torch.float64
    x, y = make_data(dtype)
    mt, ma = make_model(dtype), make_model(dtype)
    ot = make_opt(torch.optim, "Adagrad", mt.parameters(), {})
    oa = make_opt(aot, "Adagrad", ma.parameters(), {})
    for _ in range(5):
        for m, o in ((mt, ot), (ma, oa)):
            def closure(m=m, o=o):
                assert torch.is_grad_enabled()
                o.zero_grad()
                loss = F.mse_loss(m(x), y)
                loss.backward()
                return loss
            with torch.no_grad():  # step enables grad for the closure, as torch does
                loss = o.step(closure)
            assert isinstance(loss, torch.Tensor)
        assert loss.item() > 0
    assert_close_params(ma, mt, dtype)
    assert oa.step() is None  # without a closure: None


def test_add_param_group_and_mixed_dtypes_and_missing_grads():
    """Groups added later, a group mixing float32 and float64, parameters without
    a gradient some steps (their step counts diverge): as torch."""
    dtype = torch.float64
    x, y = make_data(dtype)
    out = []
    for lib in (torch.optim, aot):
        torch.manual_seed(3)
        a = nn.Linear(8, 16).double()
        b = nn.Linear(16, 1).double()
        extra = nn.Parameter(torch.randn(16, dtype=torch.float32))
        o = make_opt(lib, "Adam", a.parameters(), {"amsgrad": True})
        for t in range(30):
            if t == 5:
                o.add_param_group({"params": list(b.parameters()) + [extra], "lr": 3e-3,
                                   "betas": (0.8, 0.9)})
            o.zero_grad()
            h = torch.tanh(a(x))
            loss = F.mse_loss(b(h) + (extra.double() * h).sum(1, keepdim=True) * 0.01, y)
            loss.backward()
            if t % 3 == 0:
                a.bias.grad = None  # a step without this gradient
            if t < 9:
                extra.grad = None  # its state starts later than its group's
            o.step()
        out.append((a, b, extra, o))
    (at, bt, et, ot), (aa, ba, ea, oa) = out
    assert_close_params(aa, at, dtype)
    assert_close_params(ba, bt, dtype)
    assert (ea - et).abs().max().item() <= RTOL[torch.float32] * et.abs().max().item()
    assert oa.state[aa.bias]["step"].item() == ot.state[at.bias]["step"].item() == 20
    assert oa.state[aa.weight]["step"].item() == 30
    assert oa.state[ba.weight]["step"].item() == ot.state[bt.weight]["step"].item() == 25
    assert oa.state[ea]["step"].item() == ot.state[et]["step"].item() == 21


def test_one_kernel_call_per_batch_and_cached_tables(monkeypatch):
    calls, builds = [], []
    real_run = _kernels.run
    monkeypatch.setattr(_kernels, "run",
                        lambda batches, n, *a: calls.extend(b.dtype for b in batches) or real_run(batches, n, *a))
    real_build = aot._Fused._build
    monkeypatch.setattr(aot._Fused, "_build", lambda self: builds.append(1) or real_build(self))
    p32 = [nn.Parameter(torch.randn(5, 3)) for _ in range(4)]
    p64 = [nn.Parameter(torch.randn(7, dtype=torch.float64)) for _ in range(3)]
    o = aot.Adam([{"params": p32[:2]}, {"params": p32[2:] + p64, "lr": 0.1}])
    for p in p32 + p64:
        p.grad = torch.randn_like(p)
    ptrs = None
    for _ in range(4):
        calls.clear()
        o.step()
        # group 0: one float32 batch; group 1: one float32 and one float64 batch
        assert sorted(calls) == [0, 0, 1]
        now = [(p.data_ptr(), o.state[p]["exp_avg"].data_ptr()) for p in p32 + p64]
        assert ptrs is None or now == ptrs  # in place, no copies
        ptrs = now
    assert len(builds) == 1  # one plan for every group, built once
    o.load_state_dict(o.state_dict())
    o.step()
    assert len(builds) == 2  # rebuilt after load_state_dict
    p32[0].data = p32[0].data.clone()  # the parameter's memory moved
    before = p32[0].detach().clone()
    o.step()
    assert len(builds) == 3 and not torch.equal(p32[0].detach(), before)
    # alternating sets of parameters with a gradient: one more table, kept
    g1 = p32[1].grad
    for t in range(6):
        p32[1].grad = None if t % 2 else g1
        calls.clear()
        o.step()
        # once p32[1] has skipped a step, group 0 has two step counts: two calls
        assert sorted(calls) == [0] * (2 if t and t % 2 == 0 else 1) + [0, 1]
    # one plan per set of parameters with a gradient; the full set's is rebuilt once,
    # when group 0's two step counts first need two calls; then both are reused
    assert len(builds) == 5
    steps = [o.state[p]["step"].item() for p in p32[:2]]
    assert steps == [12.0, 9.0]


@pytest.mark.parametrize("flags", [{"foreach": True}, {"foreach": False}, {"fused": True},
                                   {"fused": False}])
def test_foreach_and_fused_flags_accepted(flags):
    """Any foreach/fused value runs the same kernel: results bitwise equal to the default."""
    data = make_data(torch.float32)
    for name in ("Adam", "SGD"):
        m1, m2 = make_model(torch.float32), make_model(torch.float32)
        train(m1, getattr(aot, name)(m1.parameters(), lr=1e-2), data, 5)
        o2 = getattr(aot, name)(m2.parameters(), lr=1e-2, **flags)
        assert o2.param_groups[0][next(iter(flags))] is next(iter(flags.values()))
        train(m2, o2, data, 5)
        for a, b in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(a, b)


def test_same_constructor_defaults_as_torch():
    p = nn.Parameter(torch.randn(3))
    for name in ("Adam", "AdamW", "Adagrad", "RMSprop", "SGD"):
        assert getattr(aot, name)([p]).defaults == getattr(torch.optim, name)([p]).defaults
        assert isinstance(getattr(aot, name)([p]), torch.optim.Optimizer)


def test_tensor_lr_and_group_edits_apply_each_step():
    dtype = torch.float64
    data = make_data(dtype)
    out = []
    for lib in (torch.optim, aot):
        m = make_model(dtype)
        o = make_opt(lib, "SGD", m.parameters(), {"momentum": 0.9}, lr=torch.tensor(0.05))
        train(m, o, data, 10)
        o.param_groups[0]["momentum"] = 0.5
        o.param_groups[0]["weight_decay"] = 0.01
        train(m, o, data, 10)
        out.append(m)
    assert_close_params(out[1], out[0], dtype)


# --- unsupported inputs --------------------------------------------------------------
@pytest.mark.parametrize("make,exc,match", [
    (lambda: torch.empty(3, device="meta"), ValueError, r"on device meta.*CPU tensors only"),
    (lambda: torch.randn(3, dtype=torch.complex64), TypeError, "complex"),
    (lambda: torch.arange(3, dtype=torch.int32), TypeError, "only float32, float64"),
    (lambda: torch.randn(4, 6)[:, ::2], ValueError, "not dense"),
    (lambda: torch.randn(4, 3).to_sparse(), TypeError, "layout torch.sparse_coo"),
], ids=["meta-device", "complex", "int32", "not-dense", "sparse-param"])
@pytest.mark.parametrize("name", ["Adam", "RMSprop", "SGD"])
def test_unsupported_param_rejected_at_construction(name, make, exc, match):
    good = nn.Linear(2, 2)
    bad = nn.Parameter(make(), requires_grad=False)
    named = list(good.named_parameters()) + [("encoder.table", bad)]
    with pytest.raises(exc, match=match) as info:
        getattr(aot, name)(named)
    assert "'encoder.table'" in str(info.value) and f"torch.optim.{name}" in str(info.value)
    # add_param_group: rejected, the optimizer keeps its groups
    o = getattr(aot, name)(good.parameters(), lr=0.1)
    with pytest.raises(exc, match=match):
        o.add_param_group({"params": [bad]})
    assert len(o.param_groups) == 1


def test_unsupported_flags_rejected():
    p = [nn.Parameter(torch.randn(3))]
    for name in ("Adam", "AdamW", "RMSprop"):
        with pytest.raises(ValueError, match="capturable=True is not supported"):
            getattr(aot, name)(p, capturable=True)
    for name in ("Adam", "AdamW", "Adagrad", "RMSprop", "SGD"):
        with pytest.raises(ValueError, match="differentiable=True is not supported"):
            getattr(aot, name)(p, differentiable=True)
    for name in ("Adam", "Adagrad", "SGD"):
        with pytest.raises(ValueError, match="cannot be `True` together"):
            getattr(aot, name)(p, fused=True, foreach=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        aot.Adam(p, lr=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        aot.SGD(p, nesterov=True)
    with pytest.raises(ValueError, match="share memory"):
        aot.SGD([{"params": p}, {"params": [nn.Parameter(p[0].data[1:])]}])
    o = aot.Adam(p)
    o.param_groups[0]["differentiable"] = True  # edited after construction: caught at step
    p[0].grad = torch.ones(3)
    with pytest.raises(ValueError, match="differentiable=True"):
        o.step()
    o.param_groups[0]["differentiable"] = False
    o.param_groups[0]["betas"] = (0.9, 1.5)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: betas\[1\] must be < 1"):
        o.step()
    assert len(o.state) == 0


def _bad_grad_cases():
    def sparse(p):
        p.grad = torch.zeros_like(p).to_sparse()
    def dtype(p):
        p.grad = torch.zeros_like(p)
        p.grad.data = torch.zeros(p.shape, dtype=torch.float64)
    def shape(p):
        p.grad = torch.zeros_like(p)
        p.grad.data = torch.zeros(p.numel() + 1)
    def neg_view(p):  # other strides are read as they are; a lazily negated view is not
        p.grad = torch._neg_view(torch.zeros_like(p))
    def alias_param(p):
        p.grad = p.detach()
    def alias_view(p):
        p.grad = p.detach()[:, :].view(p.shape)
    def param_noncontig(p):
        p.data = torch.randn(p.shape[0], 2 * p.shape[1])[:, ::2]
        p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
    return [(sparse, TypeError, "is sparse"), (dtype, TypeError, "has dtype torch.float64"),
            (shape, ValueError, "has shape"), (neg_view, ValueError, "negated"),
            (alias_param, ValueError, "shares memory"), (alias_view, ValueError, "shares memory"),
            (param_noncontig, ValueError, "not dense")]


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "after-steps"])
@pytest.mark.parametrize("spoil,exc,match", _bad_grad_cases(),
                         ids=[f.__name__ for f, _, _ in _bad_grad_cases()])
@pytest.mark.parametrize("name", ["Adam", "Adagrad", "RMSprop", "SGD"])
def test_bad_step_changes_nothing(name, spoil, exc, match, fresh):
    """The bad parameter is in the second group: the first is not stepped either."""
    if name == "Adagrad" and spoil.__name__ == "sparse":
        pytest.skip("Adagrad takes sparse gradients (tests/test_sparse_torch.py)")
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    kw = {"momentum": 0.9} if name in ("SGD", "RMSprop") else {}
    o = getattr(aot, name)([{"params": [("body.weight", a.weight), ("body.bias", a.bias)]},
                            {"params": [("head.weight", b.weight), ("head.bias", b.bias)]}],
                           lr=0.1, **kw)
    x = torch.randn(5, 4)
    if not fresh:
        for _ in range(2):
            o.zero_grad()
            (a(x).sum() + b(x).pow(2).sum()).backward()
            o.step()
    o.zero_grad()
    (a(x).sum() + b(x).pow(2).sum()).backward()
    spoil(b.weight)
    snap = snapshot(o)
    with pytest.raises(exc, match=match) as info:
        o.step()
    assert "'head.weight'" in str(info.value)
    assert_unchanged(o, snap)


def test_sparse_gradient_advice():
    emb = nn.Embedding(10, 4, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    for name, kw, advice in (("Adam", {}, "adaptopt.torch.SparseAdam"),
                             ("RMSprop", {}, "torch.optim.RMSprop does not support them"),
                             ("SGD", {"momentum": 0.9}, "momentum=0")):
        o = getattr(aot, name)(emb.parameters(), **kw)
        with pytest.raises(TypeError, match=advice):
            o.step()
    for name in ("Adagrad", "SGD"):  # these take them (tests/test_sparse_torch.py)
        before = emb.weight.detach().clone()
        getattr(aot, name)(emb.parameters(), lr=0.1).step()
        assert not torch.equal(before[1:3], emb.weight[1:3]) and torch.equal(before[0],
                                                                              emb.weight[0])


# --- torch is optional ------------------------------------------------------------
def _run_python(code):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_import_adaptopt_does_not_import_torch():
    r = _run_python("""
        import sys
        import adaptopt
        import numpy as np
        w = np.zeros(3, dtype=np.float32)
        adaptopt.Adam([w], lr=0.1).step([np.ones(3, dtype=np.float32)])
        print("torch" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("how", ["meta_path", "sys.modules"])
def test_import_without_torch_gives_clear_error(how):
    block = {
        "meta_path": """
            class Block:
                def find_spec(self, name, path=None, target=None):
                    if name == "torch" or name.startswith("torch."):
                        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            sys.meta_path.insert(0, Block())
        """,
        "sys.modules": "sys.modules['torch'] = None",
    }[how]
    r = _run_python("import sys\n" + textwrap.dedent(block) + textwrap.dedent("""
        import adaptopt
        try:
            import adaptopt.torch
        except ImportError as e:
            print("ImportError:", e)
        else:
            print("imported")
    """))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ImportError: adaptopt.torch needs PyTorch"), r.stdout
    assert "pip install 'adaptopt[torch]'" in r.stdout
