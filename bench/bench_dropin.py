"""adaptopt.torch against the NumPy API and torch.optim(fused=True), one
interleaved run: whole steps (torch's hooks included) at 4K elements and on
1,000 tensors of 1K, float32 (and DeepSpeedCPUAdam, if installed).  Prints
median microseconds and the ratios;
dropin-py is the drop-in with its checks reading tensors through Python
attributes instead of libtorch's C ABI (adaptopt._torch_shim).

    python bench/bench_dropin.py [--threads 2] [--rounds 7]
"""
import argparse
import os
import time

import numpy as np
import torch

import adaptopt
import adaptopt.torch as aot
from adaptopt import _kernels, _torch_shim


def timed(f, n):
    setup = getattr(f, "setup", None)
    if setup is not None:
        setup()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


def cases(algo, shape, count, threads):
    ps = [np.zeros(shape, np.float32) for _ in range(count)]
    gs = [np.full(shape, 0.01, np.float32) for _ in range(count)]
    o = getattr(adaptopt, algo)(ps, n_threads=threads)
    o.step(gs)
    o.step(gs)
    plan = o._last
    tp = [torch.nn.Parameter(torch.zeros(shape)) for _ in range(count)]
    tf = [torch.nn.Parameter(torch.zeros(shape)) for _ in range(count)]
    for p in tp + tf:
        p.grad = torch.full(shape, 0.01)
    ot = getattr(aot, algo)(tp, n_threads=threads)
    of = getattr(torch.optim, algo)(tf, fused=True)
    for f in (ot.step, of.step):
        f()
    def python_reads():  # the drop-in with its checks reading tensors through Python
        ot.step()
    python_reads.setup = lambda: _torch_shim.enable(False)
    out = {"numpy": lambda: o.step(gs), "kernel": lambda: _kernels.run(plan.batches, threads),
           "dropin-py": python_reads, "dropin": Step(ot.step), "torch-fused": of.step}
    ds = deepspeed_adam()
    if algo == "Adam" and ds is not None:
        td = [torch.nn.Parameter(torch.zeros(shape)) for _ in range(count)]
        for p in td:
            p.grad = torch.full(shape, 0.01)
        od = ds(td, adamw_mode=False)
        od.step()
        out["deepspeed"] = od.step
    return out


def deepspeed_adam():
    """DeepSpeedCPUAdam when deepspeed is installed (its CPU op built), else None."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import logging

        from deepspeed.ops.adam import DeepSpeedCPUAdam
        from deepspeed.utils import logger
        logger.setLevel(logging.WARNING)
    except BaseException:  # not installed, or its JIT build failed
        return None
    return DeepSpeedCPUAdam


class Step:
    """A step with the drop-in's C reading of tensors on (adaptopt._torch_shim)."""

    def __init__(self, f):
        self.f = f

    def setup(self):
        _torch_shim.enable(True)

    def __call__(self):
        self.f()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; median of {args.rounds} interleaved rounds, us per step")
    for label, shape, count, n in (("4K", (4096,), 1, 2000), ("1000x1K", (1024,), 1000, 20)):
        for algo in ("Adam", "SGD"):
            fs = cases(algo, shape, count, args.threads)
            res = {k: [] for k in fs}
            for _ in range(args.rounds):
                for k, f in fs.items():
                    res[k].append(timed(f, n))
            med = {k: sorted(v)[len(v) // 2] * 1e6 for k, v in res.items()}
            print(f"{algo:5s} {label:8s} " + "  ".join(f"{k} {v:9.1f}" for k, v in med.items())
                  + f"  | torch-fused/dropin {med['torch-fused'] / med['dropin']:5.1f}x"
                  f" (Python reads {med['torch-fused'] / med['dropin-py']:4.1f}x)"
                  f"  dropin/numpy {med['dropin'] / med['numpy']:4.2f}"
                  f"  numpy outside the kernel {med['numpy'] - med['kernel']:7.2f}"
                  + (f"  deepspeed/dropin {med['deepspeed'] / med['dropin']:4.1f}x"
                     if "deepspeed" in med else ""))


if __name__ == "__main__":
    main()
