"""One rank of tests/test_distributed_deepspeed.py (a subprocess): argv
out_dir, which ("adaptopt" or "deepspeed").

DeepSpeed ZeRO stage 2 with ``offload_optimizer: cpu`` on the CPU
accelerator over gloo; the optimizer is adaptopt.torch.AdamW passed as the
client optimizer (``zero_force_ds_cpu_optimizer: false``,
``zero_allow_untested_optimizer: true``), or DeepSpeed's own
(DeepSpeedCPUAdam, from the config's AdamW).  Each rank trains on its own
batches; rank 0 writes the parameters.
"""

import datetime
import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dist_deepspeed_common as common  # noqa: E402

import adaptopt.torch  # noqa: E402


def main():
    out, which = sys.argv[1], sys.argv[2]
    deepspeed.init_distributed(dist_backend="gloo", distributed_port=int(os.environ["MASTER_PORT"]),
                               timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    torch.set_num_threads(1)
    model = common.model()
    cfg = {"train_batch_size": common.BATCH * dist.get_world_size(),
           "train_micro_batch_size_per_gpu": common.BATCH,
           "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
           "zero_force_ds_cpu_optimizer": False, "zero_allow_untested_optimizer": True}
    if which == "adaptopt":
        opt = adaptopt.torch.AdamW(model.parameters(), **common.HYPER)
        engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
        inner = type(opt.optimizer)
        assert inner is adaptopt.torch.AdamW, inner
    else:
        cfg["optimizer"] = {"type": "AdamW", "params": {**common.HYPER}}
        engine, opt, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                 config=cfg)
        assert type(opt.optimizer).__name__ == "DeepSpeedCPUAdam", type(opt.optimizer)
    for t in range(common.STEPS):
        x, y = common.batch(t, rank)
        engine.backward(torch.nn.functional.mse_loss(engine(x), y))
        engine.step()
    state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    torch.save(state, os.path.join(out, f"{which}_rank{rank}.pt"))
    dist.barrier()


if __name__ == "__main__":
    main()
