"""adaptopt.torch under FSDP2 (fully_shard, DTensor parameters) on 2 gloo
ranks on loopback, with and without CPUOffloadPolicy.

tests/dist_fsdp_worker.py runs the ranks (one launch of 2 processes, bounded
by a timeout); every rank feeds the same batch, so the gradients FSDP2
reduce-scatters (averaged over 2 equal copies: exact) are the one-process
gradients.  Checked here: the gathered parameters after STEPS steps are
bitwise the one-process adaptopt.torch run's; torch.optim's FSDP2 run is
likewise bitwise its own one-process run, and after one step adaptopt's and
torch.optim's FSDP2 parameters are within ULP_BOUND ULPs (of the operand) of
each other; the state is DTensors, one cached plan (one kernel call) serves
every step, and a DCP checkpoint taken after SAVE_AT steps resumes in a
fresh model and optimizer to the same bits.
"""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)
pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) needs torch>=2.6")

import adaptopt  # noqa: E402
import adaptopt.torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dist_models as dm  # noqa: E402
from dist_launch import (  # noqa: E402
    SKIP_REASON,
    free_port,
    launch,
    multiprocess_enabled,
)

TIMEOUT = 240  # seconds for the whole 2-process run (about 20 s here)
ULP_BOUND = 8  # one step, adaptopt against torch.optim (tests/test_vs_torch.py's bound)
TAGS = ("adaptopt_plain", "adaptopt_offload", "torch_plain", "torch_offload")


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    if not multiprocess_enabled():
        pytest.skip(SKIP_REASON)
    out = tmp_path_factory.mktemp("fsdp")
    codes, outs = launch("dist_fsdp_worker.py", out, timeout=TIMEOUT)
    assert codes == [0, 0], "\n".join(outs)[-4000:]
    return dict(np.load(out / "fsdp.npz"))


def one_process(cls, steps):
    """The same training on one process, unsharded (torch on 1 thread, as the ranks)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = dm.make_model()
        opt = cls(model.parameters(), **dm.HYPER, **({"n_threads": 1} if cls.__module__
                                                     == "adaptopt.torch" else {}))
        for t in range(steps):
            dm.loss(model, t).backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(before)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def assert_same(ref, got, tag):
    for k, v in ref.items():
        g = got[f"{tag}/{k}"]
        assert g.shape == v.shape and np.array_equal(g.view(np.uint32), v.view(np.uint32)), \
            f"{tag}: {k} differs, max |diff| {np.max(np.abs(g - v))}"


@pytest.mark.parametrize("tag", [t for t in TAGS if t.startswith("adaptopt")]
                         + [t + "_resumed" for t in TAGS])
def test_fsdp2_bitwise_equal_to_one_process(fsdp, tag):
    cls = adaptopt.torch.AdamW if tag.startswith("adaptopt") else torch.optim.AdamW
    assert_same(one_process(cls, dm.STEPS), fsdp, tag)


def test_torch_optim_fsdp2_is_its_one_process_run(fsdp):
    ref = one_process(torch.optim.AdamW, dm.STEPS)
    assert_same(ref, fsdp, "torch_plain")
    assert_same(ref, fsdp, "torch_offload")


@pytest.mark.parametrize("mode", ["plain", "offload"])
def test_one_step_within_ulp_bound_of_torch_optim_fsdp2(fsdp, mode):
    names = sorted({k.split("/")[1] for k in fsdp if k.startswith(f"adaptopt_{mode}_first/")
                    and not k.split("/")[1].startswith("before")})
    for k, name in enumerate(dm.make_model().state_dict()):
        a = fsdp[f"adaptopt_{mode}_first/{name}"]
        t = fsdp[f"torch_{mode}_first/{name}"]
        before = fsdp[f"adaptopt_{mode}_first/before{k}"]
        scale = np.spacing(np.maximum(np.abs(before), np.abs(t)))
        assert np.max(np.abs(a - t) / scale) <= ULP_BOUND, name
    assert names


@pytest.mark.parametrize("mode", ["plain", "offload"])
def test_one_cached_plan_one_kernel_call(fsdp, mode):
    assert int(fsdp[f"adaptopt_{mode}_plans"]) == 1  # the fast path: no rebuild per step
    assert int(fsdp[f"adaptopt_{mode}_batches"]) == 1  # one group, one dtype: one call


# --- in this process: a 1-rank group, DTensor parameters, hostile inputs
@pytest.fixture(scope="module")
def mesh():
    from torch.distributed.device_mesh import init_device_mesh
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def dparam(mesh, *shape):
    from torch.distributed.tensor import Shard, distribute_tensor
    return torch.nn.Parameter(distribute_tensor(torch.randn(*shape), mesh, [Shard(0)]))


def test_dtensor_step_matches_plain_tensor(mesh):
    p = dparam(mesh, 5, 3)
    q = torch.nn.Parameter(p.full_tensor().detach().clone())
    opts = [adaptopt.torch.Adam([x], lr=0.1) for x in (p, q)]
    for t in range(3):
        g = torch.randn(5, 3, generator=torch.Generator().manual_seed(t))
        from torch.distributed.tensor import Shard, distribute_tensor
        p.grad = distribute_tensor(g.clone(), mesh, [Shard(0)])
        q.grad = g.clone()
        for o in opts:
            o.step()
    assert torch.equal(p.full_tensor(), q.detach())
    assert type(opts[0].state[p]["exp_avg"]).__name__ == "DTensor"
    assert p._local_tensor.grad is None  # the local gradient is not kept alive


def test_dtensor_parameter_with_plain_gradient_is_refused(mesh):
    p = dparam(mesh, 4)
    opt = adaptopt.torch.Adam([p], lr=0.1)
    before = p.full_tensor().clone()
    p.grad = torch.ones(4)
    with pytest.raises(TypeError, match=r"gradient of .* is a Tensor for a DTensor parameter"):
        opt.step()
    assert torch.equal(p.full_tensor(), before) and not opt.state


def test_plain_state_for_dtensor_parameter_is_refused_on_load(mesh):
    from torch.distributed.tensor import Shard, distribute_tensor
    p = dparam(mesh, 4)
    opt = adaptopt.torch.Adam([p], lr=0.1)
    p.grad = distribute_tensor(torch.ones(4), mesh, [Shard(0)])
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = torch.zeros(4)
    kept = opt.state[p]["exp_avg"]
    with pytest.raises(ValueError, match=r"'exp_avg' is a Tensor for a DTensor parameter"):
        opt.load_state_dict(sd)
    assert opt.state[p]["exp_avg"] is kept


def test_adafactor_refuses_dtensor(mesh):
    p = dparam(mesh, 4, 4)
    opt = adaptopt.torch.Adafactor([p], lr=0.1)
    p.grad = torch.zeros_like(p)
    with pytest.raises(TypeError, match="DTensor"):
        opt.step()
