"""adaptopt.Adafactor (one fused C call per parameter) against its reference,
and adaptopt.torch.Adafactor against torch.optim.Adafactor."""
import copy

import numpy as np
import pytest
from conftest import assert_bitwise_any_nan, make_grad

import adaptopt
from adaptopt import reference


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (1, 1), (17, 33), (3, 4, 5), (64, 65)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1, "maximize": True},
                                {"lr": 1e-3, "eps": (1e-30, 1e-2), "d": 2.0}])
def test_fast_equals_reference_bitwise(shape, dtype, kw):
    rng = np.random.default_rng(len(shape) * 7 + sum(shape))
    p0 = rng.standard_normal(shape).astype(dtype)
    grads = [make_grad(rng, shape, dtype) for _ in range(6)]
    out = []
    for mod in (adaptopt, reference):
        p = [p0.copy()]
        opt = mod.Adafactor(p, **kw)
        for g in grads:
            opt.step([g])
        out.append((p[0], opt))
    (a, fa), (b, fb) = out
    assert_bitwise_any_nan(a, b, "param")
    assert fa.state[0].keys() == fb.state[0].keys()
    for k, v in fb.state[0].items():
        if isinstance(v, np.ndarray):
            assert_bitwise_any_nan(fa.state[0][k], v, k)
        else:
            assert fa.state[0][k] == v


def test_bad_state_is_rejected_and_nothing_changes():
    p = np.zeros((4, 5), np.float32)
    opt = adaptopt.Adafactor([p])
    g = np.ones((4, 5), np.float32)
    opt.step([g])
    before = p.copy(), {k: (v.copy() if isinstance(v, np.ndarray) else v)
                        for k, v in opt.state[0].items()}
    opt.state[0]["row_var"] = np.zeros(2, np.float32)  # the kernel would overflow it
    with pytest.raises(ValueError, match=r"state\[0\]\['row_var'\].*shape \(4, 1\)"):
        opt.step([g])
    np.testing.assert_array_equal(p, before[0])
    assert opt.state[0]["step"] == before[1]["step"]
    opt.state[0]["row_var"] = np.zeros((4, 1), np.float32)[::1]
    opt.state[0]["row_var"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt.step([g])


def test_torch_dropin_follows_torch():
    """200 steps of a small MLP.  The reduction order differs from torch's
    (fixed blocks here), and the run amplifies such differences, so both
    float32 runs are measured against torch's float64 run: adaptopt's error
    must stay within twice torch's own float32 error (plus 1e-6)."""
    torch = pytest.importorskip("torch")
    import adaptopt.torch as aot
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    runs = {"ours": (copy.deepcopy(model), aot.Adafactor), "torch": (copy.deepcopy(model),
            torch.optim.Adafactor), "f64": (copy.deepcopy(model).double(), torch.optim.Adafactor)}
    opts = {k: cls(m.parameters()) for k, (m, cls) in runs.items()}
    assert isinstance(opts["ours"], torch.optim.Adafactor)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    for _ in range(200):
        for k, (m, _) in runs.items():
            xx, yy = (x.double(), y.double()) if k == "f64" else (x, y)
            opts[k].zero_grad()
            torch.nn.functional.mse_loss(m(xx), yy).backward()
            opts[k].step()
    ref = list(runs["f64"][0].parameters())
    for a, b, r in zip(runs["ours"][0].parameters(), runs["torch"][0].parameters(), ref):
        ours = (a.double() - r).abs().max().item()
        theirs = (b.double() - r).abs().max().item()
        assert ours <= 2 * theirs + 1e-6, (ours, theirs)
    sd = opts["ours"].state_dict()
    assert sd["state"][0].keys() == opts["torch"].state_dict()["state"][0].keys()
    opts["torch"].load_state_dict(sd)  # interchange


def test_torch_dropin_rejects_bad_state():
    torch = pytest.importorskip("torch")
    import adaptopt.torch as aot
    p = torch.nn.Parameter(torch.zeros(4, 5))
    p.grad = torch.ones(4, 5)
    o = aot.Adafactor([p])
    o.step()
    o.state[p]["col_var"] = torch.zeros(3)
    before = p.detach().clone()
    with pytest.raises(ValueError, match="col_var"):
        o.step()
    assert torch.equal(p.detach(), before)
