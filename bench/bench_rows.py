"""Row-wise steps of an embedding table: time of one step, implementations side by side.

A table of ``--rows`` x ``--cols`` float32 (default 1M x 128: 512 MiB per
buffer), ``--touched`` gradient rows per step (default 4096) of which
``--dup`` (default 10 %) repeat a row already in the step (so ~3.7K distinct
rows), in random order.  Implementations, each with its own table and state:

* ``rows``: ``adaptopt.Adam.step_rows`` (lazy), NumPy arrays;
* ``rows-exact``: the same with ``exact=True`` (catch-up of skipped steps);
* ``aot-sparse``: ``adaptopt.torch.SparseAdam``, a sparse COO gradient;
* ``torch-sparse``: ``torch.optim.SparseAdam``, the same gradient;
* ``dense``: ``adaptopt.Adam.step`` over the whole table (a dense gradient
  of the table's size: what a step costs without row updates).

Each step gets a new set of rows (drawn before timing, cycled).  After a
warm-up, rounds interleave the implementations in a rotated order; a round
times ``--samples`` steps of each (the dense step once).  Reported: median
per-step time and the ratios the targets name (torch SparseAdam / rows,
dense / rows).

    python bench/bench_rows.py                     # full size (about 5 GiB of memory)
    python bench/bench_rows.py --rows 100000 --rounds 5   # smaller
"""
import argparse
import json
import statistics
import time

import numpy as np

import adaptopt


def make_steps(rng, n_rows, cols, touched, dup, count):
    out = []
    n_dup = int(round(touched * dup))
    for _ in range(count):
        uniq = rng.choice(n_rows, size=touched - n_dup, replace=False)
        rows = np.concatenate([uniq, rng.choice(uniq, size=n_dup)])
        rng.shuffle(rows)
        out.append((rows.astype(np.int64), rng.standard_normal((touched, cols), dtype=np.float32)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=128)
    ap.add_argument("--touched", type=int, default=4096)
    ap.add_argument("--dup", type=float, default=0.10)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    steps = make_steps(rng, a.rows, a.cols, a.touched, a.dup, 16)
    table = rng.standard_normal((a.rows, a.cols), dtype=np.float32)
    threads = a.threads or adaptopt.get_num_threads()
    impls = {}

    p1 = table.copy()
    o1 = adaptopt.Adam([p1], lr=1e-3, n_threads=threads)
    p2 = table.copy()
    o2 = adaptopt.Adam([p2], lr=1e-3, n_threads=threads)
    k = {"rows": 0}

    def rows_step(opt, exact):
        def go():
            r, g = steps[k["rows"] % len(steps)]
            k["rows"] += 1
            opt.step_rows(0, r, g, exact=exact)
        return go

    impls["rows"] = rows_step(o1, False)
    impls["rows-exact"] = rows_step(o2, True)
    dense_g = rng.standard_normal((a.rows, a.cols), dtype=np.float32)
    impls["dense"] = lambda: o1.step([dense_g])

    if not a.no_torch:
        import torch

        import adaptopt.torch as aot
        torch.set_num_threads(threads)
        tsteps = [torch.sparse_coo_tensor(torch.from_numpy(r)[None], torch.from_numpy(g),
                                          (a.rows, a.cols)) for r, g in steps]
        for name, cls, kw in (("aot-sparse", aot.SparseAdam, {"n_threads": threads}),
                              ("torch-sparse", torch.optim.SparseAdam, {})):
            p = torch.from_numpy(table.copy()).requires_grad_()
            opt = cls([p], lr=1e-3, **kw)
            c = {"i": 0}

            def go(p=p, opt=opt, c=c):
                p.grad = tsteps[c["i"] % len(tsteps)]
                c["i"] += 1
                opt.step()
            impls[name] = go

    for f in impls.values():  # warm-up: state made, pages touched
        f()
        f()
    times = {n: [] for n in impls}
    names = list(impls)
    for rnd in range(a.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for n in order:
            reps = 1 if n == "dense" else a.samples
            t0 = time.perf_counter()
            for _ in range(reps):
                impls[n]()
            times[n].append((time.perf_counter() - t0) / reps)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"table {a.rows} x {a.cols} float32, {a.touched} rows/step ({a.dup:.0%} repeats), "
          f"{threads} threads, {a.rounds} rounds x {a.samples} steps, median per step:")
    for n in names:
        print(f"  {n:13s} {med[n] * 1e3:9.3f} ms")
    ratios = {"dense / rows": med["dense"] / med["rows"],
              "dense / rows-exact": med["dense"] / med["rows-exact"]}
    if "torch-sparse" in med:
        ratios["torch-sparse / rows"] = med["torch-sparse"] / med["rows"]
        ratios["torch-sparse / rows-exact"] = med["torch-sparse"] / med["rows-exact"]
        ratios["torch-sparse / aot-sparse"] = med["torch-sparse"] / med["aot-sparse"]
    for n, r in ratios.items():
        print(f"  {n:26s} {r:7.1f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "median_s": med, "ratios": ratios, "times_s": times}, f,
                      indent=1)


if __name__ == "__main__":
    main()
