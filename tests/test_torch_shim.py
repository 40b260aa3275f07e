"""The torch drop-in's per-step checks read tensors in C through libtorch's
stable C ABI (adaptopt._torch_shim); these tests hold that reading to the
Python one it replaces: the same steps, the same bits, the same refusals."""
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="the C reading of tensors needs torch")
import adaptopt.torch as aopt  # noqa: E402
from adaptopt import _kernels, _torch_shim  # noqa: E402

N = 1000


@pytest.fixture
def shim():
    """Set the C reading on or off for one test; on again afterwards."""
    yield lambda on: _torch_shim.enable(on)
    _torch_shim.enable(True)


def test_on_with_the_pinned_torch():
    # torch 2.13 (what CI installs) has the shim and the object layout it needs
    assert _torch_shim.enable(True)
    assert _kernels.torch_shim_on()


def test_environment_turns_it_off():
    code = "import adaptopt.torch, adaptopt._kernels as k; print(k.torch_shim_on())"
    env = dict(os.environ, ADAPTOPT_TORCH_SHIM="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


def _edits():
    """(name, edit(p, opt)): what a user may do to a stepped optimizer between steps."""
    def regrad(make):
        def edit(p, opt):
            p.grad = make(p)
        return edit

    def setattr_state(key, make):
        def edit(p, opt):
            opt.state[p][key] = make(p)
        return edit

    class Sub(torch.Tensor):
        pass

    def resize_state(p, opt):
        opt.state[p]["exp_avg"].resize_(10)

    def set_state(p, opt):
        opt.state[p]["exp_avg_sq"].set_(torch.zeros(N))  # same object, new storage

    def data_swap(p, opt):
        p.data = p.data.clone()  # the parameter's memory moves

    def resize_param(p, opt):
        with torch.no_grad():
            p.requires_grad_(False)
            p.resize_(10)
            p.requires_grad_(True)
        p.grad = torch.randn(10)

    def subset(p, opt):
        opt.param_groups[0]["params"][1].grad = None

    def shrink(t):  # FSDP's freeing of a storage, then a smaller one at the same place
        t.untyped_storage().resize_(0)
        t.untyped_storage().resize_(t.numel() * t.element_size() // 4)

    def shrink_state(p, opt):
        shrink(opt.state[p]["exp_avg_sq"])

    def shrink_param(p, opt):
        shrink(p)

    def shrink_grad(p, opt):
        p.grad = torch.randn(N)
        shrink(p.grad)

    def swap_tensors(p, opt):
        torch.utils.swap_tensors(opt.state[p]["exp_avg"], torch.full((N,), 0.5))

    return [
        ("same", lambda p, opt: None),
        ("new grad", regrad(lambda p: torch.randn(N))),
        ("float64 grad", regrad(lambda p: torch.randn(N, dtype=torch.float64))),
        ("bfloat16 grad", regrad(lambda p: torch.randn(N).bfloat16())),
        ("short grad", regrad(lambda p: torch.randn(N - 1))),
        ("2-d grad", regrad(lambda p: torch.randn(N).reshape(10, 100))),
        ("strided grad", regrad(lambda p: torch.randn(2 * N)[::2])),
        ("expanded grad", regrad(lambda p: torch.randn(1).expand(N))),
        ("negated view", regrad(lambda p: torch._neg_view(torch.randn(N)))),
        ("conj imag", regrad(lambda p: torch.randn(N, dtype=torch.complex64).conj().imag)),
        ("subclass grad", regrad(lambda p: torch.randn(N).as_subclass(Sub))),
        ("sparse grad", regrad(lambda p: torch.randn(N).to_sparse())),
        ("meta grad", regrad(lambda p: torch.empty(N, device="meta"))),
        ("grad aliasing state", regrad(lambda p: opt_state(p)["exp_avg"])),
        ("state replaced", setattr_state("exp_avg", lambda p: torch.full((N,), 0.25))),
        ("state too short", setattr_state("exp_avg", lambda p: torch.zeros(10))),
        ("state float16", setattr_state("exp_avg_sq", lambda p: torch.zeros(N).half())),
        ("state subclass", setattr_state("exp_avg", lambda p: torch.zeros(N).as_subclass(Sub))),
        ("state aliasing param", setattr_state("exp_avg", lambda p: p.data)),
        ("state resized in place", resize_state),
        ("state set_ to new storage", set_state),
        ("param .data replaced", data_swap),
        ("param resized in place", resize_param),
        ("a subset", subset),
        ("state storage shrunk", shrink_state),
        ("param storage shrunk", shrink_param),
        ("grad storage shrunk", shrink_grad),
        ("swap_tensors on state", swap_tensors),
    ]


_OPTS = {}


def opt_state(p):
    return _OPTS[id(p)].state[p]


def _run(name, edit, on, **kw):
    """Three parameters stepped twice, the edit, a third step: the outcome
    (the error, or every tensor's bytes)."""
    _torch_shim.enable(on)
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(N)) for _ in range(3)]
    opt = aopt.Adam(ps, lr=1e-2, **kw)
    _OPTS[id(ps[0])] = opt
    for _ in range(2):
        for p in ps:
            p.grad = torch.randn(N)
        opt.step()
    try:
        edit(ps[0], opt)
        reads = _kernels.torch_shim_reads()
        opt.step()
        outcome = "stepped"
        if on and name == "same":  # every row of the fast path was read in C
            assert _kernels.torch_shim_reads() == reads + 3
    except (TypeError, ValueError, RuntimeError) as e:
        outcome = f"{type(e).__name__}: {e}"
    finally:
        _OPTS.clear()
    tensors = [t for p in ps for t in (p, *opt.state[p].values()) if isinstance(t, torch.Tensor)]
    # a shrunk storage's tensor cannot be read (torch would read past its end)
    data = ["not readable" if t.device.type != "cpu"
            or t.untyped_storage().nbytes() < t.numel() * t.element_size()
            else t.detach().clone().reshape(-1).contiguous().view(torch.uint8).tolist()
            for t in tensors]
    return outcome, data


@pytest.mark.parametrize("kw", [{}, {"amsgrad": True}, {"weight_decay": 0.1, "maximize": True}],
                         ids=["adam", "amsgrad", "wd-maximize"])
@pytest.mark.parametrize("name,edit", _edits(), ids=[e[0] for e in _edits()])
def test_same_outcome_as_the_python_reading(shim, capfd, name, edit, kw):
    fast = _run(name, edit, True, **kw)
    slow = _run(name, edit, False, **kw)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1], f"{name}: the tensors differ between the C and Python readings"
    assert "aoti_torch" not in capfd.readouterr().err  # no tensor the shim could not read


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_and_master_weights_same_bits(shim, dtype):
    def run(on, **kw):
        _torch_shim.enable(on)
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(N).to(dtype)) for _ in range(3)]
        opt = aopt.AdamW(ps, lr=1e-2, **kw)
        for t in range(3):
            for p in ps:
                p.grad = torch.randn(N).to(dtype)
            reads = _kernels.torch_shim_reads()
            opt.step()
            if on and t:  # the rows of a cached plan, master weights too, read in C
                assert _kernels.torch_shim_reads() == reads + 3, kw
        return [t.view(torch.int16).tolist() for t in ps]
    for kw in ({}, {"master_weights": True}):
        assert run(True, **kw) == run(False, **kw)


def test_the_probes_are_checked(shim):
    """The reading stays off when a probe disagrees with it."""
    fns, codes = _torch_shim._functions()

    class Sub(torch.Tensor):
        pass
    args = (fns, torch.Tensor, torch.nn.Parameter)
    assert _kernels.torch_shim(*args, codes, _torch_shim._probes())
    assert not _kernels.torch_shim(*args, codes, [torch.zeros(3).as_subclass(Sub)])
    assert not _kernels.torch_shim_on()
    wrong = dict(codes)
    wrong[torch.float32], wrong[torch.float64] = codes[torch.float64], codes[torch.float32]
    assert not _kernels.torch_shim(*args, wrong, _torch_shim._probes())
    assert not _kernels.torch_shim_on()
    assert not _kernels.torch_shim({}, None, None, {}, [])
