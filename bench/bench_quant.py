"""Adam with 8-bit and bfloat16 state (issue 14) against float32 state and peers.

One Adam step on one float32 parameter of 16M and 64M elements, 2 threads,
the implementations interleaved round by round (median of the rounds):

- adaptopt ``state_dtype="int8"`` (block-wise 8-bit, 16 bytes/element moved),
  ``"bfloat16"`` (20 bytes) and float32 state (28 bytes, the NumPy API);
- torch.optim.Adam(fused=True) (28 bytes) when torch is installed;
- bitsandbytes' ``Adam8bit`` (CPU backend) and torchao's ``AdamW8bit``
  (weight_decay=0: Adam) when they import; both are slow, so they run at
  --peer-sizes only, with --peer-rounds rounds (torchao compiles first);
- the machine's roofline for int8's bytes: adaptopt's roofline kernel
  (``_kernels.roofline``, p read-write + g read: 12 bytes/element) gives the
  bandwidth B; int8's floor is 16 bytes/element / B.

State memory per parameter: tracemalloc (NumPy allocations) around the
first step of a fresh optimizer, and the process's RSS growth.

    python bench/bench_quant.py                   # 16M, 64M
    python bench/bench_quant.py --sizes 16M --rounds 7 --json quant.json
    python bench/bench_quant.py --codecs          # ns/element of the codecs, 1 thread
"""
import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

import adaptopt
from adaptopt import _kernels

SIZES = {"1M": 1 << 20, "4M": 1 << 22, "16M": 1 << 24, "64M": 1 << 26}
BYTES = {"int8": 16, "bfloat16": 20, "float32": 28}


def adaptopt_runner(n, state_dtype, threads, rng):
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    kw = {} if state_dtype == "float32" else {"state_dtype": state_dtype}
    opt = adaptopt.Adam([p], lr=1e-3, n_threads=threads, **kw)
    return lambda: opt.step([g])


def roofline_runner(n, threads, rng):
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    ptr = np.zeros(5, np.uint64)
    _kernels.fill_pointers([p, g, None, None, None], ptr, 0, 1)
    off = np.array([0, n], np.uintp)

    def step(keep=(p, g)):  # the arrays live as long as the runner
        assert _kernels.roofline(0, ptr, off, 1, threads) == _kernels.OK
    return step


def torch_runner(n, kind, threads, rng):
    import torch
    torch.set_num_threads(threads)
    p = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n, dtype=np.float32)))
    p.grad = torch.from_numpy(rng.standard_normal(n, dtype=np.float32))
    if kind == "torch-fused":
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
    elif kind == "bitsandbytes":
        import bitsandbytes as bnb
        opt = bnb.optim.Adam8bit([p], lr=1e-3, min_8bit_size=4096)
    else:  # torchao
        from torchao.optim import AdamW8bit
        opt = AdamW8bit([p], lr=1e-3, weight_decay=0.0)
    return opt.step


def available(kind):
    try:
        if kind == "torch-fused":
            import torch  # noqa: F401
        elif kind == "bitsandbytes":
            import bitsandbytes  # noqa: F401
        elif kind == "torchao":
            import torchao.optim  # noqa: F401
        return None
    except Exception as e:  # noqa: BLE001 - report why a peer is missing
        return f"{type(e).__name__}: {e}"


def rss():
    """The process's resident bytes now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def state_memory(n, state_dtype):
    """(tracemalloc bytes/parameter, RSS growth bytes/parameter) of an Adam state."""
    p = np.full(n, 0.5, np.float32)  # touched: resident before the first RSS reading
    g = np.ones(n, np.float32)
    kw = {} if state_dtype == "float32" else {"state_dtype": state_dtype}
    opt = adaptopt.Adam([p], lr=1e-3, n_threads=1, **kw)
    rss0 = rss()
    tracemalloc.start()
    opt.step([g])
    cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = rss()
    held = sum(v.nbytes for v in opt.state[0].values() if isinstance(v, np.ndarray))
    return cur / n, (rss1 - rss0) / n, held / n


def codecs(rounds):
    """ns/element, one thread, in cache (16K) and beyond (16M): the codecs alone
    (adaptopt_q8_quantize/dequantize) and the Adam step with int8 and float32
    state, interleaved, the best of the rounds (the least disturbed by other jobs)."""
    rng = np.random.default_rng(0)
    print("one thread, ns/element (best of rounds):")
    for n in (1 << 14, 1 << 24):
        x = rng.standard_normal(n, dtype=np.float32)
        xsq = x * x
        c = np.empty(n, np.uint8)
        a = np.empty(-(-n // 256), np.float32)
        y = np.empty(n, np.float32)
        g = rng.standard_normal(n, dtype=np.float32)
        o8 = adaptopt.Adam([x.copy()], lr=1e-3, n_threads=1, state_dtype="int8")
        o32 = adaptopt.Adam([x.copy()], lr=1e-3, n_threads=1)
        fns = {"encode signed": lambda: _kernels.q8_quantize(x, c, a, True, False, 0, 1),
               "encode unsigned": lambda: _kernels.q8_quantize(xsq, c, a, False, False, 0, 1),
               "encode stochastic": lambda: _kernels.q8_quantize(x, c, a, True, True, 7, 1),
               "decode": lambda: _kernels.q8_dequantize(c, a, y, True, 1),
               "Adam step int8": lambda: o8.step([g]),
               "Adam step float32": lambda: o32.step([g])}
        reps = max(3, (1 << 24) // n)
        best = dict.fromkeys(fns, float("inf"))
        for f in fns.values():
            f()
        for _ in range(rounds):
            for k, f in fns.items():
                t = time.perf_counter()
                for _ in range(reps):
                    f()
                best[k] = min(best[k], (time.perf_counter() - t) / reps)
        print(f"  n = {n}: " + ", ".join(f"{k} {v / n * 1e9:.3f}" for k, v in best.items()))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16M,64M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--peer-sizes", default="16M", help="sizes for bitsandbytes/torchao")
    ap.add_argument("--peer-rounds", type=int, default=3)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--codecs", action="store_true",
                    help="only the codecs and steps per element, one thread (see codecs())")
    opts = ap.parse_args(argv)
    if opts.codecs:
        return codecs(opts.rounds)
    rng = np.random.default_rng(0)
    missing = {k: available(k) for k in ("torch-fused", "bitsandbytes", "torchao")}
    for k, why in missing.items():
        if why:
            print(f"{k}: not run ({why})")
    out = {"threads": opts.threads, "isa": adaptopt.get_isa(), "results": {}, "memory": {},
           "missing": {k: v for k, v in missing.items() if v}}
    for label in opts.sizes.split(","):
        n = SIZES[label]
        runners = {f"adaptopt-{sd}": adaptopt_runner(n, sd, opts.threads, rng)
                   for sd in ("int8", "bfloat16", "float32")}
        runners["roofline(12B)"] = roofline_runner(n, opts.threads, rng)
        if not missing["torch-fused"]:
            runners["torch-fused"] = torch_runner(n, "torch-fused", opts.threads, rng)
        slow = {}
        if label in opts.peer_sizes.split(","):
            for k in ("bitsandbytes", "torchao"):
                if not missing[k]:
                    slow[k] = torch_runner(n, k, opts.threads, rng)
        for f in list(runners.values()) + list(slow.values()):
            f()  # warm up: state made, pages touched, torchao compiled
        times = {k: [] for k in list(runners) + list(slow)}
        for r in range(opts.rounds):
            for k, f in list(runners.items()) + (list(slow.items()) if r < opts.peer_rounds
                                                 else []):
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        a = med["adaptopt-int8"]
        bw = 12 * n / med["roofline(12B)"]
        print(f"\nAdam, {label} float32 parameters, {opts.threads} threads, median of "
              f"{opts.rounds} interleaved rounds (8-bit peers: {opts.peer_rounds})")
        print(f"{'implementation':<22}{'ms':>10}{'ns/elem':>10}{'int8 speedup':>14}")
        for k, v in med.items():
            print(f"{k:<22}{v * 1e3:10.2f}{v / n * 1e9:10.3f}{v / a:13.2f}x")
        floor = 16 * n / bw
        print(f"bandwidth {bw / 1e9:.1f} GB/s (roofline kernel, 12 B/elem); int8 at "
              f"{floor / a:.0%} of its 16 B/elem roofline; bfloat16 at "
              f"{20 * n / bw / med['adaptopt-bfloat16']:.0%} of 20 B/elem; float32 at "
              f"{28 * n / bw / med['adaptopt-float32']:.0%} of 28 B/elem")
        # The roofline kernel's bandwidth can be below what the float32 steps reach
        # (its one read and one read-write stream): the best 28 B/elem step's bandwidth
        # is the second, tighter ceiling.
        bw28 = max(28 * n / med[k] for k in ("adaptopt-float32", "torch-fused") if k in med)
        print(f"float32 steps reach {bw28 / 1e9:.1f} GB/s (28 B/elem); at that bandwidth int8 "
              f"is at {16 * n / bw28 / a:.0%} of its 16 B/elem roofline")
        out["results"][label] = {"median_s": med, "times": times, "bandwidth": bw,
                                 "int8_roofline_fraction": floor / a, "bandwidth_28B": bw28,
                                 "int8_fraction_at_28B_bandwidth": 16 * n / bw28 / a}
        del runners, slow
    n = SIZES["16M"]
    print("\nAdam state memory per parameter (16M, after the first step): "
          "tracemalloc / RSS growth / bytes held")
    for sd in ("int8", "bfloat16", "float32"):
        tm, rss, held = state_memory(n, sd)
        out["memory"][sd] = {"tracemalloc": tm, "rss": rss, "held": held}
        print(f"  {sd:<9} {tm:6.3f} / {rss:6.3f} / {held:6.3f} bytes")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
