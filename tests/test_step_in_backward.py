"""adaptopt.torch.step_in_backward: each parameter's update runs from its
post-accumulate-grad hook and its gradient is freed at once; the parameters
are bitwise those of backward() then step()."""

import pytest

torch = pytest.importorskip("torch")
import adaptopt.torch  # noqa: E402


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.GELU(), torch.nn.Linear(32, 32),
                               torch.nn.GELU(), torch.nn.Linear(32, 2))


def data(t):
    g = torch.Generator().manual_seed(t)
    return torch.randn(16, 6, generator=g), torch.randn(16, 2, generator=g)


@pytest.mark.parametrize("name, hyper", [("AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
                                         ("SGD", {"lr": 1e-2, "momentum": 0.9}),
                                         ("Lion", {"lr": 1e-3})])
def test_bitwise_equal_to_step_after_backward(name, hyper):
    cls = getattr(adaptopt.torch, name)
    a, b = mlp(), mlp()
    opt = cls(a.parameters(), **hyper)
    opts = adaptopt.torch.step_in_backward(cls, b.parameters(), **hyper)
    seen = []
    for t in range(4):
        x, y = data(t)
        torch.nn.functional.mse_loss(a(x), y).backward()
        opt.step()
        opt.zero_grad()
        torch.nn.functional.mse_loss(b(x), y).backward()
        seen.append([p.grad for p in b.parameters()])
    assert all(g is None for gs in seen for g in gs)  # freed inside backward
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert len(opts) == 6 and all(isinstance(o, cls) for o in opts.values())
    opts.remove()  # the hooks are gone: gradients stay, nothing steps
    before = [q.detach().clone() for q in b.parameters()]
    torch.nn.functional.mse_loss(b(data(9)[0]), data(9)[1]).backward()
    assert all(q.grad is not None for q in b.parameters())
    assert all(torch.equal(q, r) for q, r in zip(b.parameters(), before))


def test_bad_arguments_register_nothing():
    m = mlp()
    with pytest.raises(ValueError, match="learning rate"):
        adaptopt.torch.step_in_backward(adaptopt.torch.Adam, m.parameters(), lr=-1.0)
    with pytest.raises(ValueError, match=r"params\[0\] must be a leaf"):
        adaptopt.torch.step_in_backward(adaptopt.torch.Adam, [torch.ones(2) * 2], lr=0.1)
    x, y = data(0)
    torch.nn.functional.mse_loss(m(x), y).backward()
    assert all(p.grad is not None for p in m.parameters())  # no hook was left behind
