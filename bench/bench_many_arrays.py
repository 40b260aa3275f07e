"""One native call per step vs a Python loop over arrays.

1,000 arrays of 1,000 float32 elements: one adaptopt optimizer over all of
them (one C call per step), against a loop of one optimizer per array (1,000
C calls per step), against the NumPy reference. Interleaved rounds, median
per step, ratios printed.

    python bench/bench_many_arrays.py [--arrays 1000] [--size 1000] [--rounds 15]
"""
import argparse
import json
import time

import numpy as np

import adaptopt
from adaptopt import reference


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--algo", default="Adam",
                    choices=["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"])
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(args.size).astype(np.float32) for _ in range(args.arrays)]

    def params():
        return [np.zeros(args.size, np.float32) for _ in range(args.arrays)]

    one = getattr(adaptopt, args.algo)(params())
    each = [getattr(adaptopt, args.algo)([p]) for p in params()]
    ref = getattr(reference, args.algo)(params())
    pairs = [[g] for g in grads]
    impls = {
        "one call per step": lambda: one.step(grads),
        "loop over arrays": lambda: [o.step(g) for o, g in zip(each, pairs)],
        "numpy reference": lambda: ref.step(grads),
    }
    times = {k: [] for k in impls}
    for f in impls.values():
        f()  # warm-up: state allocation
    for _ in range(args.rounds):
        for k, f in impls.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = med["one call per step"]
    print(f"{args.algo}, {args.arrays} arrays x {args.size} float32, "
          f"{adaptopt.get_num_threads()} threads, median of {args.rounds}")
    for k, t in med.items():
        print(f"  {k:<18} {t * 1e3:8.3f} ms/step   {t / base:6.1f}x the one-call time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"algo": args.algo, "arrays": args.arrays, "size": args.size,
                       "ms_per_step": {k: t * 1e3 for k, t in med.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
