"""How many OpenMP runtimes and threads a torch + adaptopt process has, and
what alternating between the two costs (a training loop: torch's forward/
backward, then adaptopt's step).

    python tools/wheel/openmp_pools.py [--order adaptopt-first] [--rounds 300] [--n 1048576]

Run it once per installed adaptopt wheel (tools/wheel/repair.py's shared
libgomp.so.1, or auditwheel's renamed copy) and compare.  Prints JSON.
Seconds, not a benchmark: medians of interleaved rounds.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--order", choices=["torch-first", "adaptopt-first"], default="adaptopt-first")
    args = ap.parse_args()
    if args.order == "torch-first":
        import torch

        import adaptopt
    else:
        import torch

        import adaptopt
    from adaptopt import _config
    n = args.n
    p, g = np.zeros(n, np.float32), np.ones(n, np.float32)
    opt = adaptopt.Adam([p], n_threads=2)
    x = torch.ones(n)
    torch.set_num_threads(2)
    t_torch, t_opt, t_pair = [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        x.mul_(1.0001).add_(1e-4)          # torch's parallel region
        t1 = time.perf_counter()
        opt.step([g])                       # adaptopt's
        t2 = time.perf_counter()
        t_torch.append(t1 - t0)
        t_opt.append(t2 - t1)
        t_pair.append(t2 - t0)
    us = lambda v: round(statistics.median(v) * 1e6, 1)
    print(json.dumps({
        "runtimes": _config.openmp_runtimes(),
        "in_use": _config.openmp_runtime(),
        "threads": len(os.listdir("/proc/self/task")),
        "torch_us": us(t_torch), "adaptopt_us": us(t_opt), "pair_us": us(t_pair),
        "n": n, "rounds": args.rounds, "order": args.order,
    }, indent=1))


if __name__ == "__main__":
    main()
