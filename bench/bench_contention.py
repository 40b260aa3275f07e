"""Threads under contention (issue 12): adaptopt's default thread count
against n_threads=1, with and without a CPU hog (another process spinning
on one core), with the contention guard on (the default) and off.

Cases: Adam on 200 arrays of 1K float32 and on 48 arrays of 96K (4.7M
elements, a small GPT-2's worth).  For each, every contender runs --reps
steps per round, interleaved, --rounds rounds; prints median ms per step
and the ratio default / n_threads=1.  The hog is a child process pinned
to the last CPU (os.sched_setaffinity), started after the idle rounds and
killed at the end.

    python bench/bench_contention.py [--rounds 7] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import adaptopt
from adaptopt import _kernels

HOG = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def case(count, size):
    ps = [np.zeros(size, np.float32) for _ in range(count)]
    gs = [np.full(size, 1e-3, np.float32) for _ in range(count)]
    one = adaptopt.Adam(ps, n_threads=1)
    dflt = adaptopt.Adam(ps)  # the same arrays: only the thread count differs

    def guarded():
        dflt.step(gs)

    def unguarded():
        old = _kernels.set_thread_guard(False)
        try:
            dflt.step(gs)
        finally:
            _kernels.set_thread_guard(old)

    for f in (lambda: one.step(gs), guarded):
        f()
    return {"n_threads=1": lambda: one.step(gs), "default": guarded,
            "default, guard off": unguarded}


def timed(f, reps):
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def measure(cases, rounds):
    out = {}
    for label, (fs, reps) in cases.items():
        res = {k: [] for k in fs}
        for _ in range(rounds):
            for k, f in fs.items():
                res[k].append(timed(f, reps))
        out[label] = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in res.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    cases = {"200 x 1K": (case(200, 1024), 100), "48 x 96K": (case(48, 96 * 1024), 10)}
    print(f"adaptopt {adaptopt.__version__}, {os.cpu_count()} CPUs, default threads "
          f"{_kernels.max_threads()}; median of {args.rounds} interleaved rounds, ms per step")
    results = {"idle": measure(cases, args.rounds)}
    cpu = max(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(cpu)])
    try:
        time.sleep(0.5)
        trips = _kernels.thread_guard_trips()
        results[f"hog on CPU {cpu}"] = measure(cases, args.rounds)
        trips = _kernels.thread_guard_trips() - trips
    finally:
        hog.kill()
        hog.wait()
    for when, res in results.items():
        print(when)
        for label, med in res.items():
            one = med["n_threads=1"]
            print(f"  {label:9s} " + "  ".join(f"{k} {v:7.3f}" for k, v in med.items())
                  + "  | default/1: " + f"{med['default'] / one:4.2f}x"
                  + f", guard off/1: {med['default, guard off'] / one:4.2f}x")
    print(f"guard trips while the hog ran: {trips}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "guard_trips": trips}, f, indent=1)


if __name__ == "__main__":
    main()
