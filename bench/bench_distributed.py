"""Iteration time (forward + backward + step) of DDP training on N gloo ranks
on loopback, with adaptopt.torch.AdamW: the step after backward, ZeRO
(overlap_with_ddp False / True), and DDP._register_fused_optim (the step in
DDP's per-bucket hook).  The modes are interleaved, each timed REPEATS
times; the median per mode and the ratio to 'ddp' are printed by rank 0.

    python bench/bench_distributed.py [--world 2] [--width 1024] [--depth 6]

torch refuses gloo in hook_with_zero_step (pytorch#62300, a possible hang;
NCCL is supported): the check is bypassed here, as in the tests.
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time


def worker(args):
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.ddp_zero_hook import hook_with_zero_step
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import adaptopt.torch
    import adaptopt.torch_distributed  # noqa: F401

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    torch.set_num_threads(1)
    hyper = {"lr": 1e-4, "weight_decay": 0.01}
    x = torch.randn(16, args.width, generator=torch.Generator().manual_seed(rank))

    def make(mode):
        torch.manual_seed(0)
        layers = []
        for _ in range(args.depth):
            layers += [torch.nn.Linear(args.width, args.width), torch.nn.Tanh()]
        ddp = DDP(torch.nn.Sequential(*layers))
        opt, step = None, True
        if mode == "ddp":
            opt = adaptopt.torch.AdamW(ddp.parameters(), **hyper)
        elif mode == "torch.optim":
            opt = torch.optim.AdamW(ddp.parameters(), **hyper)
        elif mode.startswith("zero"):
            overlap = mode == "zero_overlap"
            opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=adaptopt.torch.AdamW,
                                          overlap_with_ddp=overlap, **hyper)
            if overlap:
                real = dist.get_backend
                dist.get_backend = lambda *a, **k: "bypassed"
                try:
                    ddp.register_comm_hook(None, hook_with_zero_step(allreduce_hook, ddp, opt))
                finally:
                    dist.get_backend = real
                step = False
        elif mode == "fused_hook":
            ddp._register_fused_optim(adaptopt.torch.AdamW, **hyper)
        return ddp, opt, step

    def iteration(ddp, opt, step):
        ddp(x).square().mean().backward()
        if opt is not None:
            if step:
                opt.step()
            opt.zero_grad()
        else:
            ddp.zero_grad()

    modes = ["ddp", "torch.optim", "zero", "zero_overlap", "fused_hook"]
    runs = {m: make(m) for m in modes}
    for m in modes:  # warm up (ZeRO's overlap takes no step for 2 iterations)
        for _ in range(3):
            iteration(*runs[m])
    times = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m in modes:
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                iteration(*runs[m])
            dist.barrier()
            times[m].append((time.perf_counter() - t0) / args.iters)
    if rank == 0:
        n = sum(p.numel() for p in runs["ddp"][0].parameters())
        base = statistics.median(times["ddp"])
        print(f"world {dist.get_world_size()}, {n / 1e6:.1f}M float32 parameters, median of "
              f"{args.repeats} x {args.iters} iterations (forward + backward + step)")
        for m in modes:
            med = statistics.median(times[m])
            print(f"  {m:13s} {med * 1e3:8.2f} ms/iteration   x{med / base:.2f} of ddp")
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from dist_launch import free_port
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(args.world), OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker"] + sys.argv[1:]
    procs = [subprocess.Popen(cmd, env=dict(env, RANK=str(r))) for r in range(args.world)]
    codes = [p.wait(timeout=1800) for p in procs]
    sys.exit(max(abs(c) for c in codes))


if __name__ == "__main__":
    main()
