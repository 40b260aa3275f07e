"""One rank of tests/test_distributed_fsdp.py (run as a subprocess).

argv: out_dir.  Environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
A small transformer-like model is fully_shard-ed (each block, then the
root) on a gloo group on the CPU; every rank feeds the same batch, so the
averaged gradients are the one-process gradients exactly.  For each of
(adaptopt.torch.AdamW, torch.optim.AdamW) x (no offload, CPUOffloadPolicy)
it trains STEPS steps, saving a DCP checkpoint after SAVE_AT steps, and
writes the gathered parameters; then a fresh model and optimizer load the
checkpoint and train the remaining steps (the resumed parameters).
"""

import datetime
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

sys.path.insert(0, os.path.dirname(__file__))
import dist_models  # noqa: E402

import adaptopt.torch  # noqa: E402

STEPS, SAVE_AT = dist_models.STEPS, dist_models.SAVE_AT


def sharded(offload):
    model = dist_models.make_model()
    kw = {"offload_policy": CPUOffloadPolicy(pin_memory=False)} if offload else {}
    for block in model.blocks:
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


def gathered(model):
    return {k: v.full_tensor().detach().numpy().copy() for k, v in model.state_dict().items()}


def train(model, opt, steps, start, first=None):
    """steps steps from step start; the cached plans seen (adaptopt);
    first: a dict that receives the parameters after step 0."""
    plans = set()
    for t in range(start, start + steps):
        if first is not None and t == 0:
            before = [p.full_tensor().detach().numpy().copy() for p in model.parameters()]
        dist_models.loss(model, t).backward()
        opt.step()
        opt.zero_grad()
        plans.add(id(getattr(opt, "_last", None)))
        if first is not None and t == 0:
            first.update(gathered(model))
            first.update({f"before{k}": v for k, v in enumerate(before)})
    return plans


def main():
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    adaptopt.set_num_threads(1)
    results = {}
    for offload in (False, True):
        for name, cls in (("adaptopt", adaptopt.torch.AdamW), ("torch", torch.optim.AdamW)):
            tag = f"{name}_{'offload' if offload else 'plain'}"
            model = sharded(offload)
            opt = cls(model.parameters(), **dist_models.HYPER)
            first = {}
            train(model, opt, SAVE_AT, 0, first)
            results.update({f"{tag}_first/{k}": v for k, v in first.items()})
            ckpt = os.path.join(out, f"ckpt_{tag}")
            msd, osd = get_state_dict(model, opt)
            if name == "adaptopt":  # state like torch.optim's: DTensors, what DCP shards
                kinds = {type(v).__name__ for st in opt.state.values() for k, v in st.items()
                         if k != "step"}
                assert kinds == {"DTensor"}, kinds
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=ckpt)
            plans = train(model, opt, STEPS - SAVE_AT, SAVE_AT)
            if name == "adaptopt":  # one cached plan, one kernel call: no rebuild per step
                results[f"{tag}_plans"] = np.array(len(plans))
                results[f"{tag}_batches"] = np.array(len(opt._last.batches))
            for k, v in gathered(model).items():
                results[f"{tag}/{k}"] = v
            # resume from the checkpoint in a fresh model and optimizer
            model = sharded(offload)
            opt = cls(model.parameters(), **dist_models.HYPER)
            msd, osd = get_state_dict(model, opt)
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=ckpt)
            set_state_dict(model, opt, model_state_dict=state["model"],
                           optim_state_dict=state["optim"])
            train(model, opt, STEPS - SAVE_AT, SAVE_AT)
            for k, v in gathered(model).items():
                results[f"{tag}_resumed/{k}"] = v
    if rank == 0:
        np.savez(os.path.join(out, "fsdp.npz"), **results)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
