"""Sparse COO gradients in adaptopt.torch: SparseAdam, Adagrad, SGD against torch.optim.

Each step starts from identical state (ours is copied from torch's after
each comparison), and every parameter and state element must be within
ULP_BOUND units in the last place of the larger operand (test_vs_torch's
measure).  Where the two differ: torch's SparseAdam adds eps outside the
bias correction (the kernel folds it into eps), its Adagrad multiplies by
-clr after dividing (the kernel before), and torch's coalesce may add a
repeated row's values in another order; measured worst case about 2-3 ULP.
"""
import pytest
from test_vs_torch import ulps

torch = pytest.importorskip("torch")
import adaptopt.torch as at  # noqa: E402

ULP_BOUND = 8
ROWS, COLS = 60, 13


def sparse_grad(gen, dtype, n=40):
    """A sparse COO gradient of rows, uncoalesced, with repeated rows."""
    idx = torch.randint(0, ROWS, (n,), generator=gen)
    idx[: n // 4] = idx[n // 4: 2 * (n // 4)]
    vals = torch.randn(n, COLS, generator=gen, dtype=dtype)
    return torch.sparse_coo_tensor(idx[None], vals, (ROWS, COLS), check_invariants=True)


def close(a, b, before, what):
    d = ulps(a.numpy(), b.numpy(), before.numpy())
    assert d.max() <= ULP_BOUND, f"{what}: {d.max()} ULP"


def compare(make_ours, make_torch, dtype, steps=4, dense=False, keys=()):
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(ROWS, COLS, generator=gen, dtype=dtype)
    w0 = torch.randn(COLS, generator=gen, dtype=dtype)
    ours = [p0.clone(), w0.clone()] if dense else [p0.clone()]
    theirs = [p0.clone(), w0.clone()] if dense else [p0.clone()]
    a, b = make_ours(ours), make_torch(theirs)
    for _ in range(steps):
        g = sparse_grad(gen, dtype)
        gw = torch.randn(COLS, generator=gen, dtype=dtype)
        before = theirs[0].clone()
        for ps in (ours, theirs):
            ps[0].grad = g.clone()
            if dense:
                ps[1].grad = gw.clone()
        a.step()
        b.step()
        close(ours[0], theirs[0], before, "param")
        if dense:
            close(ours[1], theirs[1], theirs[1], "dense param")
        for k in keys:
            close(a.state[ours[0]][k], b.state[theirs[0]][k], theirs[0], k)
            a.state[ours[0]][k].copy_(b.state[theirs[0]][k])
        assert float(a.state[ours[0]].get("step", 0)) == float(b.state[theirs[0]].get("step", 0))
        for x, y in zip(ours, theirs):
            x.data.copy_(y)
    return a, b, ours, theirs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [{}, {"lr": 0.05, "betas": (0.5, 0.9), "maximize": True}])
def test_sparse_adam_matches_torch(dtype, kw):
    a, b, ours, _ = compare(lambda ps: at.SparseAdam(ps, **kw),
                            lambda ps: torch.optim.SparseAdam(ps, **kw), dtype,
                            keys=("exp_avg", "exp_avg_sq"))
    assert isinstance(a, torch.optim.SparseAdam)
    assert type(a.state[ours[0]]["step"]) is int
    untouched = torch.ones(ROWS, dtype=torch.bool)  # rows never named keep zero moments
    for k in ("exp_avg", "exp_avg_sq"):
        assert (a.state[ours[0]][k][untouched].ne(0).any(dim=1)
                == b.state[list(b.state)[0]][k][untouched].ne(0).any(dim=1)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [{"lr": 0.1}, {"lr": 0.1, "lr_decay": 0.05, "maximize": True,
                                              "initial_accumulator_value": 0.2}])
def test_adagrad_sparse_matches_torch(dtype, kw):
    compare(lambda ps: at.Adagrad(ps, **kw), lambda ps: torch.optim.Adagrad(ps, **kw), dtype,
            dense=True, keys=("sum",))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sgd_sparse_matches_torch(dtype):
    compare(lambda ps: at.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1), dtype,
            dense=True)
    compare(lambda ps: at.SGD(ps, lr=0.1, maximize=True),
            lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True), dtype)


def test_embedding_training_loop_and_state_dict_interchange():
    torch.manual_seed(0)
    e1, e2 = (torch.nn.Embedding(50, 8, sparse=True) for _ in range(2))
    e2.load_state_dict(e1.state_dict())
    o1, o2 = at.SparseAdam(e1.parameters(), lr=0.01), torch.optim.SparseAdam(e2.parameters(),
                                                                             lr=0.01)
    for _ in range(3):
        idx = torch.randint(0, 50, (20,))
        for e, o in ((e1, o1), (e2, o2)):
            o.zero_grad()
            (e(idx) ** 2).sum().backward()
            o.step()
    close(e1.weight.detach(), e2.weight.detach(), e2.weight.detach(), "weight")
    o2.load_state_dict(o1.state_dict())  # ours -> torch and back
    o1.load_state_dict(o2.state_dict())
    assert o1.state[e1.weight]["step"] == 3


def test_thread_count_does_not_change_the_bits():
    from adaptopt import _kernels
    before = _kernels.get_threshold(0, 0)
    _kernels.set_threshold(1)
    try:
        gen = torch.Generator().manual_seed(1)
        p0 = torch.randn(ROWS, COLS, generator=gen)
        g = sparse_grad(gen, torch.float32, n=200)
        out = []
        for n in (1, 2):
            p = p0.clone()
            opt = at.SparseAdam([p], n_threads=n)
            for _ in range(3):
                p.grad = g
                opt.step()
            out.append(p)
        assert torch.equal(out[0].view(torch.int32), out[1].view(torch.int32))
    finally:
        for a in _kernels.ALGOS.values():
            _kernels.set_threshold(before, a, 0)


def _frozen(opt, ps):
    return [p.clone() for p in ps], {k: {n: (v.clone() if isinstance(v, torch.Tensor) else v)
                                         for n, v in st.items()} for k, st in opt.state.items()}


def _same(opt, ps, snap):
    for p, q in zip(ps, snap[0]):
        assert torch.equal(p, q)
    assert len(opt.state) == len(snap[1])


@pytest.mark.parametrize("make,grad,exc,msg", [
    (lambda ps: at.SGD(ps, lr=0.1, momentum=0.9), None, TypeError, "momentum=0"),
    (lambda ps: at.Adagrad(ps, weight_decay=0.1), None, RuntimeError, "weight_decay"),
    (lambda ps: at.SparseAdam(ps), "dense", RuntimeError, "dense gradients"),
    (lambda ps: at.SparseAdam(ps), "range", ValueError, r"out of range \[0, 60\)"),
    (lambda ps: at.Adagrad(ps), "2d", ValueError, "2 sparse dimensions"),
])
def test_bad_sparse_steps_raise_and_change_nothing(make, grad, exc, msg):
    gen = torch.Generator().manual_seed(5)
    ps = [torch.randn(ROWS, COLS, generator=gen), torch.randn(COLS, generator=gen)]
    opt = make(ps)
    ps[1].grad = torch.ones(COLS)
    g = sparse_grad(gen, torch.float32)
    if grad == "dense":
        g = g.to_dense()
    elif grad == "range":
        g = torch.sparse_coo_tensor(torch.tensor([[3, 60]]), torch.ones(2, COLS), (ROWS, COLS),
                                    check_invariants=False)
    elif grad == "2d":
        g = torch.sparse_coo_tensor(torch.tensor([[3], [2]]), torch.ones(1), (ROWS, COLS))
    ps[0].grad = g
    snap = _frozen(opt, ps)
    with pytest.raises(exc, match=msg):
        opt.step()
    _same(opt, ps, snap)
    assert ps[0].grad is g


def test_empty_sparse_gradient_counts_a_step_as_torch():
    ours, theirs = torch.ones(ROWS, COLS), torch.ones(ROWS, COLS)
    a, b = at.SparseAdam([ours]), torch.optim.SparseAdam([theirs])
    for p, o in ((ours, a), (theirs, b)):
        p.grad = torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.long),
                                         torch.zeros(0, COLS), (ROWS, COLS))
        o.step()
    assert a.state[ours]["step"] == b.state[theirs]["step"] == 1 and torch.equal(ours, theirs)
    ag = at.Adagrad([ours])
    ours.grad = torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.long),
                                        torch.zeros(0, COLS), (ROWS, COLS))
    ag.step()
    assert float(ag.state[ours]["step"]) == 1 and torch.equal(ours, theirs)
