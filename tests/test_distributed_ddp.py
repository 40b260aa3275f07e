"""adaptopt.torch's functional twins (adaptopt.torch_distributed) with DDP on
2 gloo ranks on loopback: ZeroRedundancyOptimizer(overlap_with_ddp=True)
with hook_with_zero_step, and DDP._register_fused_optim (the step per bucket
in DDP's comm hook), against DDP + adaptopt.torch.AdamW after backward.

One launch of tests/dist_ddp_worker.py (2 processes, a timeout).  DDP
averages the ranks' gradients the same way in every run, and the update is
elementwise, so every run's parameters are bitwise the plain run's.  torch
refuses gloo in hook_with_zero_step (pytorch#62300, a possible hang; it
supports NCCL, and this machine has no GPU): the worker bypasses that one
check, and the timeout bounds a hang.
"""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dist_launch import SKIP_REASON, launch, multiprocess_enabled  # noqa: E402

MODES = ("zero", "zero_overlap", "fused_hook")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    if not multiprocess_enabled():
        pytest.skip(SKIP_REASON)
    out = tmp_path_factory.mktemp("ddp")
    codes, outs = launch("dist_ddp_worker.py", out, timeout=240)
    assert codes == [0, 0], "\n".join(outs)[-4000:]
    return dict(np.load(out / "ddp.npz"))


@pytest.mark.parametrize("mode", MODES)
def test_bitwise_equal_to_ddp_then_step(ddp, mode):
    names = [k.split("/", 1)[1] for k in ddp if k.startswith("plain/")]
    assert names
    for name in names:
        a, b = ddp[f"plain/{name}"], ddp[f"{mode}/{name}"]
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), \
            f"{mode}: {name}, max |diff| {np.max(np.abs(a - b))}"


def test_the_runs_trained(ddp):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dist_ddp_worker
    init = dist_ddp_worker.model().state_dict()
    assert all(not np.array_equal(ddp[f"plain/{k}"], v.numpy()) for k, v in init.items())


# --- in this process: the functional protocol itself
adaptopt_td = pytest.importorskip("adaptopt.torch_distributed")
import adaptopt.torch  # noqa: E402


def test_registered_with_torch():
    from torch.distributed.optim.utils import functional_optim_map
    for cls, fn in adaptopt_td.functional.items():
        assert functional_optim_map[cls] is fn and fn.optimizer_class is cls
    assert functional_optim_map[adaptopt.torch.AdamW].__name__ == "FunctionalAdamW"


def test_step_and_step_param_equal_the_optimizer():
    torch.manual_seed(0)
    ps = [torch.randn(7, 3), torch.randn(5)]
    grads = [[torch.randn(7, 3), torch.randn(5)] for _ in range(3)]
    ref = [p.clone().requires_grad_() for p in ps]
    opt = adaptopt.torch.AdamW(ref, lr=0.1, weight_decay=0.1)
    a = [p.clone() for p in ps]
    fa = adaptopt_td.FunctionalAdamW(a, lr=0.1, weight_decay=0.1)
    b = [p.clone() for p in ps]
    fb = adaptopt_td.FunctionalAdamW([], lr=0.1, weight_decay=0.1, _allow_empty_param_list=True)
    for gs in grads:
        for p, g in zip(ref, gs):
            p.grad = g.clone()
        opt.step()
        fa.step([g.clone() for g in gs])
        for p, g in zip(b, gs):
            fb.step_param(p, g.clone())
    for r, x, y in zip(ref, a, b):
        assert torch.equal(r.detach(), x) and torch.equal(r.detach(), y)
    assert torch.equal(fa.state[a[0]]["exp_avg"], opt.state[ref[0]]["exp_avg"])
    assert fb.state[b[1]]["step"].item() == 3


def test_hyperparameter_edits_apply():
    p = torch.zeros(4)
    f = adaptopt_td.FunctionalSGD([p], lr=1.0)
    f.step([torch.ones(4)])
    f.param_group["lr"] = 0.5  # what ZeRO's _sync_param_groups does for an lr scheduler
    f.step([torch.ones(4)])
    assert torch.equal(p, torch.full((4,), -1.5))


def test_bad_gradients_change_nothing():
    p = torch.ones(4)
    f = adaptopt_td.FunctionalAdam([p], lr=0.1)
    with pytest.raises(ValueError, match="gradients has 2 entries"):
        f.step([torch.ones(4), torch.ones(4)])
    with pytest.raises(ValueError, match=r"gradients\[0\].*does not match"):
        f.step([torch.ones(5)])
    with pytest.raises(ValueError, match=r"gradients\[0\].*does not match"):
        f.step([torch.ones(4, dtype=torch.float64)])
    with pytest.raises(TypeError, match=r"gradients\[0\] must be a tensor"):
        f.step([[1.0] * 4])
    with pytest.raises(ValueError, match="empty parameter list"):
        adaptopt_td.FunctionalAdam([], lr=0.1)
    assert torch.equal(p, torch.ones(4)) and not f.state


def test_replaced_memory_is_refused():
    p = torch.nn.Parameter(torch.ones(4))
    f = adaptopt_td.FunctionalAdam([p], lr=0.1)
    p.data = torch.zeros(4)
    with pytest.raises(ValueError, match="memory was replaced"):
        f.step([torch.ones(4)])


FAULT_TIMEOUT = 60  # dist_fault_worker's process group times out after 20 s


def test_killed_rank_fails_the_other_and_the_checkpoint_loads(tmp_path):
    import time
    if not multiprocess_enabled():
        pytest.skip(SKIP_REASON)
    t0 = time.monotonic()
    codes, outs = launch("dist_fault_worker.py", tmp_path, timeout=FAULT_TIMEOUT)
    took = time.monotonic() - t0
    assert codes[1] == -9, outs  # SIGKILL
    assert codes[0] == 3 and "rank 0 failed:" in outs[0], outs  # a clear error, no hang
    assert took < FAULT_TIMEOUT
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model.load_state_dict(ckpt["model"])
    opt = adaptopt.torch.AdamW(model.parameters(), lr=1e-2)
    opt.load_state_dict(ckpt["optim"])
    assert all(st["step"].item() == 3 for st in opt.state.values())
