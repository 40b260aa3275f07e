"""adaptopt.torch against torch.optim on real nn.Modules: time of one opt.step().

Cases (``--cases``):

* ``mlp``: a 10-layer MLP (``nn.Linear`` width ``--width``, default 1024:
  20 parameter tensors, 10.5M elements);
* ``mlp-small``: the same at width 128 (20 tensors, 166K elements: per-tensor
  overhead dominates);
* ``embedding``: an ``nn.Embedding`` table of ``--emb-elements`` (default 16M)
  float32 elements, dense gradient.

For each case and algorithm: ``adaptopt.torch`` against ``torch.optim`` with
``foreach=False`` (single), ``foreach=True`` and ``fused=True`` (where torch
has a fused kernel: Adam, AdamW, Adagrad, SGD).  Gradients come from one real
backward pass, then are overwritten with random normal values (every element
does work, no zeros or subnormals); they are not changed by a step, so every
step does the same work.  All implementations update the same parameters
(each has its own state).  After warm-up steps, rounds interleave the
implementations in a rotated order; each round takes ``--samples`` timed
steps of each.  Reported: the median per-step time and its interquartile
range, and the ratio ``torch time / adaptopt time`` (> 1: adaptopt faster).

Threads: ``torch.set_num_threads(n)`` and ``n_threads=n`` for adaptopt
(default: all CPUs).  ``cpu_load_other`` in the JSON is the CPUs' worth of
time other processes used while a case ran: the numbers mean little when it
is high.

    python bench/bench_torch.py                   # full run
    python bench/bench_torch.py --quick           # smaller, fewer rounds
    python bench/bench_torch.py --algos Adam,SGD --json torch.json
"""
import argparse
import gc
import json
import os
import platform
import sys
import time

import numpy as np

try:
    import torch
except ImportError:
    sys.exit("bench_torch.py needs PyTorch: pip install 'adaptopt[torch]'")

from suite import CpuLoad, _openmp_runtimes  # bench/suite.py, beside this script

import adaptopt
import adaptopt.torch as aot

ALGOS = {  # name -> (constructor kwargs, torch has fused=True)
    "Adam": ({"lr": 1e-3}, True),
    "AdamW": ({"lr": 1e-3}, True),
    "Adagrad": ({"lr": 1e-2}, True),
    "RMSprop": ({"lr": 1e-3}, False),
    "SGD": ({"lr": 1e-3, "momentum": 0.9}, True),
}
IMPLS = ["adaptopt", "torch-single", "torch-foreach", "torch-fused"]


def make_case(name, width, emb_elements, seed=0):
    """A module with gradients: (module, description)."""
    torch.manual_seed(seed)
    if name in ("mlp", "mlp-small"):
        w = width if name == "mlp" else 128
        layers = []
        for _ in range(10):
            layers += [torch.nn.Linear(w, w), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers[:-1])
        model(torch.randn(64, w)).square().mean().backward()
        desc = f"10-layer MLP, width {w}"
    elif name == "embedding":
        dim = 64
        rows = max(1, emb_elements // dim)
        model = torch.nn.Embedding(rows, dim)
        model(torch.randint(0, rows, (4096,))).square().mean().backward()
        desc = f"nn.Embedding({rows}, {dim})"
    else:
        raise ValueError(name)
    with torch.no_grad():
        for p in model.parameters():
            p.grad.copy_(torch.randn_like(p))
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    return model, f"{desc}: {len(params)} tensors, {n / 1e6:.2f}M elements"


def make_opt(impl, algo, params, threads):
    kw, _ = ALGOS[algo]
    if impl == "adaptopt":
        return getattr(aot, algo)(params, n_threads=threads, **kw)
    flag = {"torch-single": {"foreach": False}, "torch-foreach": {"foreach": True},
            "torch-fused": {"fused": True}}[impl]
    return getattr(torch.optim, algo)(params, **kw, **flag)


def bench_case(params, algo, threads, warmup, rounds, samples):
    impls = [i for i in IMPLS if i != "torch-fused" or ALGOS[algo][1]]
    opts = {i: make_opt(i, algo, params, threads) for i in impls}
    times = {i: [] for i in impls}
    pc = time.perf_counter
    for i in impls:
        for _ in range(warmup):
            opts[i].step()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = impls[r % len(impls):] + impls[:r % len(impls)]
            for i in order:
                step = opts[i].step
                step()  # untimed: the previous implementation's traffic leaves the caches
                for _ in range(samples):
                    t0 = pc()
                    step()
                    times[i].append(pc() - t0)
    finally:
        gc.enable()
    del opts
    gc.collect()
    out = {}
    for i, t in times.items():
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        out[i] = {"median_s": float(med), "iqr_s": float(q3 - q1), "n_samples": len(t)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="mlp,mlp-small,embedding",
                   help="comma list of mlp, mlp-small, embedding")
    p.add_argument("--algos", default=",".join(ALGOS), help="comma list (default all)")
    p.add_argument("--width", type=int, default=1024, help="width of the 'mlp' case")
    p.add_argument("--emb-elements", type=int, default=16 * 2**20,
                   help="elements of the embedding table (default 16M)")
    p.add_argument("--threads", type=int, default=None, help="default: all CPUs")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--samples", type=int, default=3, help="timed steps per round")
    p.add_argument("--quick", action="store_true",
                   help="width 512, a 4M-element table, 2 warm-up steps, 3 rounds of 2")
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    if a.quick:
        a.width, a.emb_elements, a.warmup, a.rounds, a.samples = 512, 4 * 2**20, 2, 3, 2
    cases = [c for c in a.cases.split(",") if c]
    algos = [x for x in a.algos.split(",") if x]
    for x in algos:
        if x not in ALGOS:
            p.error(f"--algos: unknown {x!r}; known: {', '.join(ALGOS)}")
    threads = a.threads or adaptopt.get_num_threads()
    torch.set_num_threads(threads)

    cfg = adaptopt.show_config(mode="dicts")
    runtimes = _openmp_runtimes()
    meta = {"adaptopt": adaptopt.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads,
            "isa": cfg["isa"], "openmp": cfg["openmp"], "openmp_runtimes": runtimes,
            "argv": sys.argv[1:] if argv is None else argv,
            "warmup": a.warmup, "rounds": a.rounds, "samples": a.samples}
    print(f"adaptopt {meta['adaptopt']} ({meta['isa']}), torch {meta['torch']}, "
          f"{threads} thread(s), {os.cpu_count()} CPUs")
    if len(runtimes) > 1:
        print(f"warning: several OpenMP runtimes loaded: {runtimes}")

    records = []
    for case in cases:
        model, desc = make_case(case, a.width, a.emb_elements)
        params = list(model.parameters())
        print(f"\n{case}: {desc}")
        print(f"{'algorithm':<10}" + "".join(f"{i:>16}" for i in IMPLS)
              + "   | torch / adaptopt: " + "  ".join(i[6:] for i in IMPLS[1:]))
        for algo in algos:
            load = CpuLoad().start()
            res = bench_case(params, algo, threads, a.warmup, a.rounds, a.samples)
            other = load.stop()
            base = res["adaptopt"]["median_s"]
            cells, ratios = [], []
            for i in IMPLS:
                r = res.get(i)
                cells.append(f"{r['median_s'] * 1e3:13.2f} ms" if r else f"{'-':>16}")
                if i != "adaptopt":
                    ratios.append(f"{r['median_s'] / base:6.2f}x" if r else f"{'-':>7}")
                if r:
                    records.append({"case": case, "description": desc, "algo": algo,
                                    "impl": i, "threads": threads, **r,
                                    "ratio_vs_adaptopt": r["median_s"] / base,
                                    "cpu_load_other": other})
            note = f"   (other load {other:.1f} CPUs)" if other is not None and other > 0.25 else ""
            print(f"{algo:<10}" + "".join(cells) + "   | " + " ".join(ratios) + note)
        del model, params
        gc.collect()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
