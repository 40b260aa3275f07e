"""NAdam, RAdam, Adamax and Lion: one raw kernel call per step against
torch.optim (single-tensor and foreach) and lion-pytorch, float32.

The kernel is called as tests/kernel_call.py does (flags and scalars from the
algorithm's Spec), before the optimizer classes exist.  Every implementation
keeps its own parameter and state; gradients are random normal (no zeros or
subnormals) and unchanged by a step.  After warm-up steps (RAdam past its
rho_t > 5 switch), rounds interleave the implementations in a rotated order,
one timed step each per round; reported: the median per-step time in ns per
element and torch's time over adaptopt's (> 1: adaptopt faster), all from
the same run.  Threads: ``torch.set_num_threads(n)`` and n kernel threads.

    python bench/bench_new_algos.py                       # 1M and 16M, 2 threads
    python bench/bench_new_algos.py --sizes 1M --rounds 5 --json new.json
"""
import argparse
import json
import statistics
import time

import numpy as np

from adaptopt import _kernels
from adaptopt.algorithms import SPECS

SPEC = {s.name: s for s in SPECS}
ALGOS = ("NAdam", "RAdam", "Adamax", "Lion")
WARMUP = 7


def parse_size(s):
    return int(float(s[:-1]) * {"K": 1 << 10, "M": 1 << 20}[s[-1]]) if s[-1] in "KM" else int(s)


class Kernel:
    """One array's kernel step from its Spec (the per-step scalars in Python)."""

    def __init__(self, spec, h, p, g, n_threads):
        self.spec, self.h, self.n_threads = spec, h, n_threads
        self.state = {k: np.zeros_like(p) for k in spec.buffers(h)}
        self.s = {k: f(h) for k, f in spec.scalar_state.items()} or None
        self.t = 0
        arrays = [p, g] + [self.state.get(k) for k in spec.kernel_buffers]
        self.keep = arrays
        self.ptr = np.array([0 if a is None else a.ctypes.data for a in arrays], dtype=np.uint64)
        self.offsets = np.array([0, p.size], dtype=np.uintp)
        self.flags, self.scal = spec.fixed_scalars(h)
        self.pos = spec.step_positions()

    def step(self):
        self.t += 1
        spec, h, t, s = self.spec, self.h, self.t, self.s
        scal = list(self.scal)
        for i, v in zip(self.pos, spec.per_step(h, t, s)):
            scal[i] = v
        rc = _kernels.step(spec.code, 0, self.ptr, len(self.ptr), self.offsets,
                           np.array(scal, dtype=np.float64),
                           self.flags | spec.step_flag_bits(h, t, s), self.n_threads)
        assert rc == _kernels.OK, rc
        if s is not None:
            self.s = spec.advance(h, t, s)


def peers(name, p0, g):
    """name -> step function for each peer available."""
    import torch
    out = {}

    def make(label, cls, **kw):
        tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        tp.grad = torch.from_numpy(g)
        opt = cls([tp], **kw)
        out[label] = opt.step

    if name == "Lion":
        try:
            import lion_pytorch
        except ImportError:
            return out
        make("lion-pytorch", lion_pytorch.Lion, lr=1e-4)
        return out
    cls = getattr(torch.optim, name)
    make("torch-single", cls, foreach=False)
    make("torch-foreach", cls, foreach=True)
    return out


def bench(name, n, threads, rounds):
    import torch
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    spec = SPEC[name]
    h = spec.checked(spec.defaults(), name)
    p = p0.copy()
    impls = {"adaptopt": Kernel(spec, h, p, g, threads).step, **peers(name, p0, g)}
    for f in impls.values():
        for _ in range(WARMUP):
            f()
    times = {k: [] for k in impls}
    order = list(impls)
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            impls[k]()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"median_s": v, "ns_per_element": v / n * 1e9,
                "speedup": v / med["adaptopt"]} for k, v in med.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--sizes", default="1M,16M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", metavar="PATH")
    o = ap.parse_args(argv)
    results = []
    print(f"float32, {o.threads} threads, median of {o.rounds} interleaved rounds: "
          "ns/element (peer time / adaptopt time)")
    for size in o.sizes.split(","):
        n = parse_size(size)
        for name in o.algos.split(","):
            r = bench(name, n, o.threads, o.rounds)
            results.append({"algo": name, "n": n, "threads": o.threads, "results": r})
            cells = "  ".join(f"{k} {v['ns_per_element']:.3f}"
                              + ("" if k == "adaptopt" else f" ({v['speedup']:.2f}x)")
                              for k, v in r.items())
            print(f"{name:<7}{size:>5}  {cells}", flush=True)
    if o.json:
        with open(o.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
