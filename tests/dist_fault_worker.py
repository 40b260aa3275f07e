"""One rank of tests/test_distributed_ddp.py's fault test (a subprocess).

DDP + adaptopt.torch.AdamW on gloo; rank 0 writes a checkpoint after step 2
(torch.save of the model's and optimizer's state_dict, to a temporary file
renamed into place); at step 3 rank 1 kills itself (SIGKILL).  Rank 0 is
then in DDP's all-reduce: it must fail (gloo sees the closed connection at
once, or the process group's TIMEOUT passes), print the error and exit 3.
"""

import datetime
import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import adaptopt.torch

TIMEOUT = 20  # seconds: the process group's timeout, the bound on any wait


def main():
    out = sys.argv[1]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=TIMEOUT))
    rank = dist.get_rank()
    torch.manual_seed(0)
    ddp = DDP(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)))
    opt = adaptopt.torch.AdamW(ddp.parameters(), lr=1e-2)
    try:
        for t in range(1000):
            if t == 3 and rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            ddp(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
            if t == 2 and rank == 0:
                tmp = os.path.join(out, "ckpt.pt.tmp")
                torch.save({"model": ddp.module.state_dict(), "optim": opt.state_dict()}, tmp)
                os.replace(tmp, os.path.join(out, "ckpt.pt"))
            if t == 2:
                dist.barrier()
    except Exception as e:  # what the user sees
        print(f"rank {rank} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
        os._exit(3)
    print(f"rank {rank} finished: the kill was not noticed", flush=True)


if __name__ == "__main__":
    main()
