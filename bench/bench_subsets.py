"""Parameter subsets (issue 12): a mixture-of-experts step where a random
4 of 64 expert tensors have gradients, against the same step over those 4
alone and torch.optim.Adam(fused=True); one interleaved run, float32.

Every step draws a new subset (the same seeded sequence for every
contender), so a cache keyed by the subset never hits.  "alone": n/k
optimizers over k parameters each, stepped in turn (each step a plan it
has cached, over memory as cold as a random subset's).  Prints the median
microseconds per step of --rounds interleaved rounds and the ratios.

    python bench/bench_subsets.py [--experts 64] [--active 4] [--size 65536]
                                  [--threads 2] [--rounds 9] [--json out.json]
"""
import argparse
import json
import time

import numpy as np
import torch

import adaptopt
import adaptopt.torch as aot


def make(args):
    n, k, size = args.experts, args.active, args.size
    rng = np.random.default_rng(0)
    # the first n/k subsets cover every expert (each gets its state), then random ones
    subsets = [np.arange(i, i + k) % n for i in range(0, n, k)]
    subsets += [rng.choice(n, k, replace=False) for _ in range(4096)]
    grads = [np.full(size, 1e-3, np.float32) for _ in range(n)]
    tgrads = [torch.from_numpy(g) for g in grads]

    def torch_case(cls, **kw):
        ps = [torch.nn.Parameter(torch.zeros(size)) for _ in range(n)]
        opt = cls(ps, lr=1e-3, **kw)
        it = iter(range(10**9))

        def step():
            s = subsets[next(it) % len(subsets)]
            for p in ps:
                p.grad = None
            for i in s:
                ps[i].grad = tgrads[i]
            opt.step()
        return step

    def numpy_case():
        ps = [np.zeros(size, np.float32) for _ in range(n)]
        opt = adaptopt.Adam(ps, lr=1e-3, n_threads=args.threads)
        it = iter(range(10**9))

        def step():
            s = subsets[next(it) % len(subsets)]
            gs = [None] * n
            for i in s:
                gs[i] = grads[i]
            opt.step(gs)
        return step

    def alone_case():  # n/k optimizers over k parameters each, in turn: cached plans,
        ps = [torch.nn.Parameter(torch.zeros(size)) for _ in range(n)]  # as much memory
        opts = [aot.Adam(ps[i:i + k], lr=1e-3, n_threads=args.threads) for i in range(0, n, k)]
        for p, g in zip(ps, tgrads):
            p.grad = g
        it = iter(range(10**9))

        def step():
            opts[next(it) % len(opts)].step()
        return step

    cases = {"dropin": torch_case(aot.Adam, n_threads=args.threads),
             "numpy": numpy_case(),
             "alone": alone_case(),
             "torch-fused": torch_case(torch.optim.Adam, fused=True),
             "torch-foreach": torch_case(torch.optim.Adam, foreach=True)}
    for f in cases.values():  # every expert gets its state (the steady state of training)
        for _ in range(2 * n // k):
            f()
    return cases


def timed(f, reps):
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--active", type=int, default=4)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = make(args)
    res = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, f in cases.items():
            res[k].append(timed(f, args.reps))
    med = {k: sorted(v)[len(v) // 2] * 1e6 for k, v in res.items()}
    print(f"{args.active} of {args.experts} x {args.size} float32 Adam, threads {args.threads}; "
          f"median of {args.rounds} interleaved rounds of {args.reps} steps, us per step")
    for k, v in med.items():
        print(f"  {k:14s} {v:9.1f}   torch-fused/{k} {med['torch-fused'] / v:5.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "median_us": med}, f, indent=1)


if __name__ == "__main__":
    main()
