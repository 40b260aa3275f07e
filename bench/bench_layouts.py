"""What each gradient layout costs (issue 12): one Adam step, float32,
1M elements, 1 thread, on a C-order parameter, for gradients that go
straight to the kernel (the parameter's strides), that the kernel gathers
per block (another dense order, stride 0, a slice), and for comparison the
alternative a caller could do (np.ascontiguousarray, then the step).
Interleaved rounds; prints median ms and the ratio to the direct step.

    python bench/bench_layouts.py [--rounds 7] [--size 1024]
"""
import argparse
import time

import numpy as np

import adaptopt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    n = args.size
    g = np.full((n, n), 1e-3, np.float32)
    wide = np.zeros((n, 2 * n), np.float32)
    grads = {"same strides": g, "Fortran order": np.asfortranarray(g),
             "stride 0 (broadcast row)": np.broadcast_to(g[:1], g.shape),
             "slice [:, ::2]": wide[:, ::2]}
    p = np.zeros((n, n), np.float32)
    opt = adaptopt.Adam([p], n_threads=args.threads)
    cases = {k: (lambda v: lambda: opt.step([v]))(v) for k, v in grads.items()}
    cases["Fortran, ascontiguousarray first"] = lambda: opt.step(
        [np.ascontiguousarray(grads["Fortran order"])])
    cases["slice, ascontiguousarray first"] = lambda: opt.step(
        [np.ascontiguousarray(grads["slice [:, ::2]"])])
    for f in cases.values():
        f()
    res = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, f in cases.items():
            t = time.perf_counter()
            for _ in range(10):
                f()
            res[k].append((time.perf_counter() - t) / 10)
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in res.items()}
    base = med["same strides"]
    print(f"Adam, {n}x{n} float32, {args.threads} thread(s); median of {args.rounds} rounds")
    for k, v in med.items():
        print(f"  {k:34s} {v:7.3f} ms  {v / base:5.2f}x")


if __name__ == "__main__":
    main()
