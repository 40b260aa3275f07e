"""torch.amp.GradScaler with adaptopt.torch: the optimizers declare
``_step_supports_amp_scaling`` and take GradScaler's ``grad_scale`` and
``found_inf`` as torch's fused optimizers do.  Against torch.optim.Adam
(fused=True): the same skipped steps, scales and step counts over an
injected-inf sequence, the same ``.grad`` after a step (bit for bit), and
parameters within the bound that separates torch's fused arithmetic from
its single-tensor one (NUMERICS.md: 8e-5 relative in float32 after 200
steps; here 40 steps, bound 1e-4 float32, 1e-12 float64).
"""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import adaptopt.torch as aot  # noqa: E402

INJECT = {0: "inf", 5: "inf", 6: "nan", 17: "inf", 30: "-inf"}


def mlp(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1)).to(dtype)


def train(model, opt, steps, unscale_first=False, seed=1):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=3)
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x, y = torch.randn(32, 8, generator=g, dtype=dtype), torch.randn(32, 1, generator=g, dtype=dtype)
    trace = []
    for it in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        if it in INJECT:
            next(model.parameters()).grad[0, 1] = float(INJECT[it])
        if unscale_first:  # the generic path: unscale_, clip, then step
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        st = opt.state.get(next(model.parameters()), {})
        trace.append((scaler.get_scale(), float(st["step"]) if "step" in st else 0.0))
    return trace


@pytest.mark.parametrize("unscale_first", [False, True], ids=["fused", "unscale_-then-step"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grad_scaler_skips_and_scales_as_torch_fused_adam(dtype, unscale_first):
    m1, m2 = mlp(dtype), mlp(dtype)
    o1 = torch.optim.Adam(m1.parameters(), lr=1e-2, fused=True)
    o2 = aot.Adam(m2.parameters(), lr=1e-2)
    assert o2._step_supports_amp_scaling
    t1 = train(m1, o1, 40, unscale_first)
    t2 = train(m2, o2, 40, unscale_first)
    assert t1 == t2  # the same scale and step count after every step
    assert t1[-1][1] == 40 - len(INJECT)
    bound = 1e-4 if dtype == torch.float32 else 1e-12
    for a, b in zip(m1.parameters(), m2.parameters()):
        rel = ((a - b).abs() / b.abs().clamp_min(1e-3)).max().item()
        assert rel < bound, rel


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_grad_is_left_unscaled_exactly_as_torch_fused(name, dtype):
    torch.manual_seed(2)
    g = torch.randn(5000, dtype=dtype) * 3000
    out = []
    for cls in (getattr(torch.optim, name), getattr(aot, name)):
        p = torch.nn.Parameter(torch.randn(5000, dtype=dtype, generator=torch.Generator().manual_seed(3)))
        opt = cls([p], lr=0.1, fused=True) if cls.__module__.startswith("torch") else cls([p], lr=0.1)
        p.grad = g.clone()
        opt.grad_scale, opt.found_inf = torch.tensor(3.0), torch.tensor(0.0)
        opt.step()
        out.append(p.grad)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], g / 3.0)


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop", "Lion", "Adafactor"])
def test_found_inf_skips_and_changes_nothing(name):
    p = torch.nn.Parameter(torch.randn(7, 5))
    opt = getattr(aot, name)([p], lr=0.1)
    assert opt._step_supports_amp_scaling
    p.grad = torch.randn(7, 5)
    opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.tensor(1.0)
    opt.step()  # the first step skipped: no state made, nothing written
    assert len(opt.state) == 0 or all(len(v) == 0 for v in opt.state.values())
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    before_p, before_g = p.detach().clone(), p.grad.clone()
    before = copy.deepcopy(opt.state_dict())
    opt.found_inf = torch.tensor(1.0)
    p.grad[0, 0] = float("inf")
    before_g = p.grad.clone()
    opt.step()
    assert torch.equal(p.detach(), before_p) and torch.equal(p.grad, before_g)
    after = opt.state_dict()
    for k, st in before["state"].items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(after["state"][k][key]), torch.as_tensor(v)), key


def test_skipped_step_still_checks_its_inputs():
    p = torch.nn.Parameter(torch.randn(4))
    opt = aot.Adam([p])
    p.grad = torch.randn(4)._neg_view()  # a lazily negated view: refused
    opt.found_inf = torch.tensor(1.0)
    with pytest.raises(ValueError, match="negat"):
        opt.step()


@pytest.mark.parametrize("value, err", [(torch.tensor([1.0, 2.0]), ValueError),
                                        (torch.tensor(0.0), ValueError),
                                        (torch.tensor(float("nan")), ValueError),
                                        ("x", TypeError)])
def test_bad_grad_scale_raises_and_changes_nothing(value, err):
    p = torch.nn.Parameter(torch.randn(4))
    opt = aot.Adam([p])
    p.grad = torch.randn(4)
    before, g = p.detach().clone(), p.grad.clone()
    opt.grad_scale = value
    with pytest.raises(err, match="grad_scale"):
        opt.step()
    assert torch.equal(p.detach(), before) and torch.equal(p.grad, g) and len(opt.state) == 0


def test_without_the_attributes_the_step_is_unchanged():
    m1, m2 = mlp(torch.float32), mlp(torch.float32)
    o1, o2 = aot.Adam(m1.parameters()), torch.optim.Adam(m2.parameters())
    x = torch.randn(16, 8)
    for m, o in ((m1, o1), (m2, o2)):
        for _ in range(3):
            o.zero_grad()
            m(x).sum().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert np.allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-7)
