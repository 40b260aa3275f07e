"""Where a second thread starts to pay: the serial/parallel thresholds.

For each algorithm and dtype, one whole ``opt.step`` at sizes 1K..128K with
1 thread and with N threads, the parallel threshold forced to 1 so that
every size forks, measured interleaved by ``bench/suite.py`` (median).
Prints both times, the speedup, and for each row the smallest power of two
from which N threads was faster (by --margin) at every larger size: the
defaults compiled into csrc/dispatch.c come from this table.

    python bench/bench_threshold.py                   # 2 threads, float32+float64
    python bench/bench_threshold.py --threads 4 --algos adam,sgd-momentum
"""
import argparse
import json

import suite as B  # bench/suite.py, beside this script

from adaptopt import _kernels

ALGOS = ["adam", "adagrad", "rmsprop", "sgd-momentum"]
SIZES = [2 ** k for k in range(10, 18)]


def crossover(sizes, t1, tn, margin):
    """Smallest size from which tn * margin <= t1 at it and every larger size."""
    best = None
    for n, a, b in reversed(list(zip(sizes, t1, tn))):
        if b * margin > a:
            break
        best = n
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--threads", type=int, default=2, help="the parallel thread count")
    ap.add_argument("--margin", type=float, default=1.1,
                    help="N threads must be this much faster (default 1.1)")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per implementation and case")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    plan = B.Plan(budget=args.budget)
    saved = {(a, d): _kernels.get_threshold(a, d) for a in _kernels.ALGOS.values() for d in (0, 1)}
    _kernels.set_threshold(1)
    records, rows = [], []
    try:
        for name in args.algos.split(","):
            algo = B.ALGOS[name]
            for dt in args.dtypes.split(","):
                t1, tn = [], []
                for n in SIZES:
                    params, grads = B._make_arrays(1, n, B.DTYPES[dt], 1234)
                    runners = {}
                    for k in (1, args.threads):
                        r = B.IMPLS["adaptopt"].build(algo, [p.copy() for p in params], grads, k)
                        runners[k] = B.Runner(r.step, keep=(r,))  # thread count fixed
                    res = B.measure(runners, args.threads, plan)
                    t1.append(res[1]["median_s"] * 1e6)
                    tn.append(res[args.threads]["median_s"] * 1e6)
                    records += [dict(algo=name, dtype=dt, n_elements=n, threads=k,
                                     step_us=res[k]["median_s"] * 1e6, iqr_us=res[k]["iqr_s"] * 1e6)
                                for k in (1, args.threads)]
                rows.append((name, dt, t1, tn, crossover(SIZES, t1, tn, args.margin)))
    finally:
        for (a, d), n in saved.items():
            _kernels.set_threshold(n, a, d)

    print(f"one step, us: 1 thread / {args.threads} threads (speedup); "
          f"threshold = smallest size from which {args.threads} threads is >= {args.margin}x "
          "faster at every larger size")
    print(f"{'algorithm':<14}{'dtype':<9}" + "".join(f"{n:>19}" for n in SIZES) + "  threshold")
    for name, dt, t1, tn, cross in rows:
        cells = "".join(f"{f'{a:.1f}/{b:.1f} ({a / b:.2f})':>19}" for a, b in zip(t1, tn))
        print(f"{name:<14}{dt:<9}{cells}  {cross or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "margin": args.margin, "records": records,
                       "thresholds": {f"{r[0]}/{r[1]}": r[4] for r in rows}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
