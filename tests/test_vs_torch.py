"""adaptopt against torch.optim (single-tensor path, foreach=False).

One step from identical state, every algorithm and option set: each
parameter and state element within ULP_BOUND units in the last place of the
larger operand: |a - b| / spacing(max(|before|, |after|, |after - before|))
(the last term is the size of the update, the other operand of the final
addition).  For state buffers the gradient is an operand too (``g + wd*p``
may cancel before it enters the buffer), so |g| joins the maximum there.
ULPs of the result would be meaningless where an addition nearly cancels.  Measured
worst case here is about 5-6 ULP (RMSprop's addcdiv in torch is not
correctly rounded, see shared/NUMERICS.md); the bound is 8.
"""
import numpy as np
import pytest

import adaptopt

from test_parity import CASE_IDS, CASES

torch = pytest.importorskip("torch")

ULP_BOUND = 8

STATE = {
    "Adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "Adagrad": ("sum",),
    "RMSprop": ("square_avg", "momentum_buffer", "grad_avg"),
    "SGD": ("momentum_buffer",),
}


def ulps(a, b, before, *operands):
    """Distance in ULPs of the larger operand; NaN against NaN is 0, NaN against a number inf."""
    big = np.maximum.reduce([np.abs(before), np.abs(a), np.abs(b), np.abs(a - before)]
                            + [np.abs(x) for x in operands])
    scale = np.spacing(big)
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale.astype(np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    d[nan_a & nan_b] = 0
    d[nan_a ^ nan_b] = np.inf
    return d


def random_state(rng, name, kw, n, dtype):
    """State as after a few steps: moving averages of plausible gradients."""
    st = {"step": 7}
    for k in STATE[name]:
        if k == "max_exp_avg_sq" and not kw.get("amsgrad"):
            continue
        if k == "momentum_buffer" and not kw.get("momentum"):
            continue
        if k == "grad_avg" and not kw.get("centered"):
            continue
        if k in ("exp_avg", "grad_avg", "momentum_buffer"):
            st[k] = (rng.standard_normal(n) * 0.1).astype(dtype)
        else:  # second moments: positive
            st[k] = (rng.random(n) * 0.5 + 0.02).astype(dtype)
    if "grad_avg" in st:  # a mean square is at least the squared mean
        st["square_avg"] += st["grad_avg"] ** 2
    return st


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_one_step_within_ulp_bound_of_torch(case, dtype):
    name, kw = CASES[case]
    rng = np.random.default_rng(case)
    n = 4099
    p0 = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)).astype(dtype)
    st = random_state(rng, name, kw, n, dtype)

    p = p0.copy()
    opt = getattr(adaptopt, name)([p], lr=0.01, **kw)
    opt.load_state_dict({"state": {0: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                      for k, v in st.items()}},
                         "param_groups": opt.state_dict()["param_groups"]})
    opt.step([g])

    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = getattr(torch.optim, name)([tp], lr=0.01, foreach=False, **kw)
    tstate = {k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v)
              for k, v in st.items()}
    tstate["step"] = (torch.tensor(float(st["step"])) if name != "SGD" else None)
    if name == "SGD":
        del tstate["step"]
    topt.state[tp] = tstate
    tp.grad = torch.from_numpy(g.copy())
    topt.step()

    worst = ulps(p, tp.detach().numpy(), p0).max()
    assert worst <= ULP_BOUND, f"params: {worst} ULP"
    for k, v in st.items():
        if isinstance(v, np.ndarray):
            worst = ulps(opt.state[0][k], topt.state[tp][k].numpy(), v, g).max()
            assert worst <= ULP_BOUND, f"state {k!r}: {worst} ULP"


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_first_steps_from_fresh_state_match_torch(case):
    """Lazily created state and the first steps (SGD's buffer = g, Adam's
    bias correction at t = 1, 2, 3) agree with torch too."""
    name, kw = CASES[case]
    rng = np.random.default_rng(100 + case)
    p0 = rng.standard_normal(1000).astype(np.float64)
    p = p0.copy()
    opt = getattr(adaptopt, name)([p], lr=0.01, **kw)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = getattr(torch.optim, name)([tp], lr=0.01, foreach=False, **kw)
    for _ in range(3):
        g = rng.standard_normal(1000)
        before = p.copy()
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        worst = ulps(p, tp.detach().numpy(), before).max()
        assert worst <= ULP_BOUND, f"params: {worst} ULP"
        p[...] = tp.detach().numpy()  # continue from identical parameters
