"""Mixed precision (issue 13), one interleaved run, 2 threads, Adam:

- bf16: bfloat16 parameters and gradients, state in bfloat16 (torch.optim's
  layout): adaptopt.torch against torch.optim(fused=True) on the same
  tensors, and the roofline kernel over the same bytes (14 per element);
- master: a float32 master weight and float32 state, bfloat16 gradients in,
  the bfloat16 parameter written in the same pass (master_weights=True,
  state_dtype='float32'), against the offload pattern with torch: the
  gradient converted to float32, torch's fused float32 step, copy_ into the
  bfloat16 model; roofline over the same bytes (28 per element).

Prints median milliseconds per step and the ratios.

    python bench/bench_precision.py [--sizes 16M,64M] [--rounds 5] [--threads 2]
"""
import argparse
import time

import numpy as np
import torch

import adaptopt.torch as aot
from adaptopt import _kernels


def timed(f, n):
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


def roofline(n_elems, threads):
    """The cheapest pass over 4 float32 arrays of n_elems (1 read, 3 read and written)."""
    arrs = [np.ones(n_elems, np.float32) for _ in range(4)]
    ptr = np.array([a.ctypes.data for a in arrs] + [0], np.uint64)
    off = np.array([0, n_elems], np.uintp)
    return lambda keep=arrs: _kernels.roofline(0, ptr, off, 3, threads)  # keep: the arrays live


def cases(n, threads):
    g16 = torch.randn(n).bfloat16()
    p_ours = torch.randn(n).bfloat16().requires_grad_()
    p_fused = p_ours.detach().clone().requires_grad_()
    p_ours.grad, p_fused.grad = g16.clone(), g16.clone()
    ours = aot.Adam([p_ours], lr=1e-5, n_threads=threads)
    fused = torch.optim.Adam([p_fused], lr=1e-5, fused=True)
    # offload pattern: float32 master, bfloat16 gradient and model
    model = torch.randn(n).bfloat16().requires_grad_()
    model.grad = g16.clone()
    master_ours = aot.Adam([model], lr=1e-5, master_weights=True, state_dtype="float32",
                           n_threads=threads)
    master = model.detach().float().requires_grad_()
    master.grad = torch.empty(n)
    torch_master = torch.optim.Adam([master], lr=1e-5, fused=True)
    model2 = model.detach().clone()

    def torch_offload():
        master.grad.copy_(g16)
        torch_master.step()
        model2.copy_(master.detach())

    out = {"bf16": {"adaptopt": ours.step, "torch-fused": fused.step,
                    "roofline": roofline(n // 2, threads)},
           "master": {"adaptopt": master_ours.step, "torch-fused+copy": torch_offload,
                      "roofline": roofline(n, threads)}}
    for fs in out.values():
        for f in fs.values():
            f()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="16M,64M")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; median of {args.rounds} interleaved rounds, ms per step")
    for label in args.sizes.split(","):
        n = int(label.rstrip("M")) << 20
        for case, fs in cases(n, args.threads).items():
            res = {k: [] for k in fs}
            for _ in range(args.rounds):
                for k, f in fs.items():
                    res[k].append(timed(f, 3))
            med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in res.items()}
            peer = next(k for k in med if k.startswith("torch"))
            print(f"{case:7s} {label:4s} " + "  ".join(f"{k} {v:8.2f}" for k, v in med.items())
                  + f"  | {peer}/adaptopt {med[peer] / med['adaptopt']:4.2f}x"
                  f"  roofline/adaptopt {med['roofline'] / med['adaptopt']:4.0%}")


if __name__ == "__main__":
    main()
