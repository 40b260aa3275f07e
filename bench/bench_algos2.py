"""Adadelta, Rprop, ASGD and Adafactor kernels against torch.optim (float32).

The elementwise three at 1M and 16M elements: the C kernel (one call per
step, the Spec's scalars, as tests/kernel_call.py runs it) against torch's
single-tensor path (foreach=False) and foreach=True; Adafactor on a 4096 x
4096 parameter against torch.optim.Adafactor (single-tensor, its default).
Both sides on the same thread count.  Interleaved rounds (one step of each
per round), median ns/element, ratios from this one run.

    python bench/bench_algos2.py [--threads 2] [--rounds 11] [--json PATH]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import adaptopt
from adaptopt import _kernels
from adaptopt.algorithms import adadelta, adafactor, asgd, rprop

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from kernel_call import kernel_step  # noqa: E402

SPECS = {"Adadelta": adadelta.ADADELTA, "Rprop": rprop.RPROP, "ASGD": asgd.ASGD}


def elementwise(name, n, threads, rounds, rng):
    spec = SPECS[name]
    h = spec.checked(spec.defaults(), name)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    st = {k: (np.full_like(p, spec.init[k](h)) if k in spec.init else np.zeros_like(p))
          for k in spec.buffers(h)}
    s = {k: f(h) for k, f in spec.scalar_state.items()}
    t = [0]

    def ours():
        t[0] += 1
        kernel_step(spec, h, t[0], p, g, st, s, extra_flags=spec.step_flags(h, t[0], s),
                    n_threads=threads)
        if spec.advance:
            s.update(spec.advance(h, t[0], s))

    impls = {"adaptopt": ours}
    for fe in (False, True):
        tp = torch.from_numpy(p.copy())
        tp.grad = torch.from_numpy(g.copy())
        impls["torch foreach" if fe else "torch single"] = getattr(torch.optim, name)(
            [tp], foreach=fe).step
    return run(impls, n, rounds)


def adafactor_bench(threads, rounds, rng, shape=(4096, 4096)):
    h = adafactor.ADAFACTOR.checked(adafactor.ADAFACTOR.defaults(), "Adafactor")
    p = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    st = {k: np.zeros(sh, np.float32) for k, sh in adafactor.state_shapes(shape).items()}
    t = [0]

    def ours():
        t[0] += 1
        rc = _kernels.adafactor_step(*adafactor.kernel_call(h, t[0], p, g, st, threads))
        assert rc == 0

    tp = torch.from_numpy(p.copy())
    tp.grad = torch.from_numpy(g.copy())
    impls = {"adaptopt": ours,
             "torch single": torch.optim.Adafactor([tp], foreach=False).step}
    return run(impls, p.size, rounds)


def run(impls, n, rounds):
    for f in impls.values():      # warm up (state made, pages touched)
        f()
    times = {k: [] for k in impls}
    for _ in range(rounds):
        for k, f in impls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) / n * 1e9 for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--sizes", default="1000000,16000000")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = {"isa": adaptopt.get_isa(), "threads": args.threads, "results": []}
    for name in SPECS:
        for n in map(int, args.sizes.split(",")):
            r = elementwise(name, n, args.threads, args.rounds, rng)
            out["results"].append({"algo": name, "n": n, "ns_per_element": r})
            print(f"{name:9s} n={n:>9,d}  " + "  ".join(f"{k} {v:6.2f}" for k, v in r.items())
                  + f"   x single {r['torch single'] / r['adaptopt']:5.1f}"
                  + f"   x foreach {r['torch foreach'] / r['adaptopt']:5.1f}", flush=True)
    r = adafactor_bench(args.threads, max(5, args.rounds // 2), rng)
    out["results"].append({"algo": "Adafactor", "shape": [4096, 4096], "ns_per_element": r})
    print("Adafactor 4096x4096  " + "  ".join(f"{k} {v:6.2f}" for k, v in r.items())
          + f"   x torch {r['torch single'] / r['adaptopt']:5.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
