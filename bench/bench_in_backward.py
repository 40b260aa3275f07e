"""The step inside backward (adaptopt.torch.step_in_backward) against the step
after backward, on an MLP whose gradients far exceed the caches: time per
iteration (forward + backward + step) and peak memory (the process's max
RSS, each mode in its own process, and the RSS right after backward: the
gradient memory still alive), modes interleaved over REPEATS rounds, medians
and ratios printed.  glibc's malloc runs with a fixed mmap threshold
(MALLOC_MMAP_THRESHOLD_=1 MiB, in every mode): freed large blocks go back
to the OS, so RSS follows the live tensors instead of the heap's high-water
mark.

    python bench/bench_in_backward.py [--width 2048] [--depth 4] [--repeats 5]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def worker(mode, width, depth, iters):
    import torch

    import adaptopt.torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers)
    x = torch.randn(8, width)
    hyper = {"lr": 1e-4, "weight_decay": 0.01}
    if mode == "in_backward":
        adaptopt.torch.step_in_backward(adaptopt.torch.AdamW, model.parameters(), **hyper)
        opt = None
    elif mode == "after":
        opt = adaptopt.torch.AdamW(model.parameters(), **hyper, n_threads=1)
    else:
        opt = torch.optim.AdamW(model.parameters(), **hyper)
    times, after_bwd = [], []
    page = os.sysconf("SC_PAGE_SIZE")
    for i in range(iters + 2):
        t0 = time.perf_counter()
        model(x).square().mean().backward()
        with open("/proc/self/statm") as f:
            after_bwd.append(int(f.read().split()[1]) * page)
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"time": statistics.median(times), "params": n,
                      "after_backward": max(after_bwd),
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--worker")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.width, a.depth, a.iters)
    modes = ["after", "in_backward", "torch.optim"]
    res = {m: [] for m in modes}
    for _ in range(a.repeats):
        for m in modes:
            out = subprocess.run([sys.executable, __file__, "--worker", m, "--width",
                                  str(a.width), "--depth", str(a.depth), "--iters", str(a.iters)],
                                 capture_output=True, text=True, check=True, timeout=600,
                                 env=dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))).stdout
            res[m].append(json.loads(out.strip().splitlines()[-1]))
    n = res["after"][0]["params"]
    print(f"MLP {a.depth} x Linear({a.width}, {a.width}): {n / 1e6:.1f}M float32 parameters, "
          f"{4 * n / 2**20:.0f} MiB of gradients; 1 thread; median of {a.repeats} processes "
          f"x {a.iters} iterations")
    t0 = statistics.median(r["time"] for r in res["after"])
    m0 = statistics.median(r["maxrss"] for r in res["after"])
    b0 = statistics.median(r["after_backward"] for r in res["after"])
    for m in modes:
        t = statistics.median(r["time"] for r in res[m])
        rss = statistics.median(r["maxrss"] for r in res[m])
        print(f"  {m:12s} {t * 1e3:8.1f} ms/iteration (x{t / t0:.2f})   peak RSS "
              f"{rss / 2**20:7.0f} MiB ({(rss - m0) / 2**20:+.0f} MiB)   RSS after backward "
              f"{(statistics.median(r['after_backward'] for r in res[m]) - b0) / 2**20:+.0f} MiB")


if __name__ == "__main__":
    main()
