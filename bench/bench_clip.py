"""Global-norm clipping fused into the step against torch: adaptopt's
``opt.step([g], max_grad_norm=c)`` (one reduction pass over the gradients,
then the update with the clip coefficient applied on the fly) against
``torch.nn.utils.clip_grad_norm_`` followed by ``torch.optim.Adam(fused=True)``
(a norm pass, a pass that rewrites the gradients, the step).  Also each
side's step without clipping, and adaptopt's reduction alone.  float32, one
interleaved run; median seconds per step over the rounds, and the ratios.

    python bench/bench_clip.py [--sizes 16M,64M] [--threads 2] [--rounds 9] [--json out.json]
"""
import argparse
import json
import time

import numpy as np
import torch

import adaptopt

SUFFIX = {"K": 1 << 10, "M": 1 << 20}


def size(text):
    return int(text[:-1]) * SUFFIX[text[-1]] if text[-1] in SUFFIX else int(text)


def timed(f, n):
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


def cases(n, threads, max_norm):
    rng = np.random.default_rng(0)
    g = rng.standard_normal(n, dtype=np.float32)  # norm ~ sqrt(n) >> max_norm: clipped
    p = rng.standard_normal(n, dtype=np.float32)
    opt = adaptopt.Adam([p], lr=1e-6, n_threads=threads)
    plain_p = p.copy()
    plain = adaptopt.Adam([plain_p], lr=1e-6, n_threads=threads)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    tp.grad = torch.from_numpy(g.copy())
    topt = torch.optim.Adam([tp], lr=1e-6, fused=True)
    tq = torch.nn.Parameter(torch.from_numpy(p.copy()))
    tq.grad = torch.from_numpy(g.copy())
    tplain = torch.optim.Adam([tq], lr=1e-6, fused=True)

    def torch_clip_step():
        torch.nn.utils.clip_grad_norm_([tp], max_norm)
        topt.step()

    fs = {"adaptopt clip+step": lambda: opt.step([g], max_grad_norm=max_norm),
          "torch clip_grad_norm_+fused": torch_clip_step,
          "adaptopt step": lambda: plain.step([g]),
          "torch fused step": tplain.step,
          "adaptopt norm only": lambda: opt._sumsq([g])}
    for f in fs.values():  # state made, plans cached
        f()
        f()
    assert opt.step([g], max_grad_norm=max_norm).stepped
    return fs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16M,64M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--max-norm", type=float, default=1.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"float32 Adam, threads {args.threads}, median of {args.rounds} interleaved rounds")
    out = []
    for label in args.sizes.split(","):
        n = size(label)
        fs = cases(n, args.threads, args.max_norm)
        reps = max(1, (64 << 20) // n * 3)
        res = {k: [] for k in fs}
        for _ in range(args.rounds):
            for k, f in fs.items():
                res[k].append(timed(f, reps))
        med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
        row = {"size": label, "elements": n, **{k: v for k, v in med.items()},
               "speedup clip+step": med["torch clip_grad_norm_+fused"] / med["adaptopt clip+step"],
               "speedup step": med["torch fused step"] / med["adaptopt step"],
               "clip overhead adaptopt": med["adaptopt clip+step"] / med["adaptopt step"],
               "clip overhead torch": med["torch clip_grad_norm_+fused"] / med["torch fused step"]}
        out.append(row)
        print(f"{label}: " + "  ".join(f"{k} {v * 1e3:7.2f} ms" for k, v in med.items()))
        print(f"{label}: clip+step torch/adaptopt {row['speedup clip+step']:.2f}x  "
              f"(step alone {row['speedup step']:.2f}x); clip costs adaptopt "
              f"{row['clip overhead adaptopt']:.2f}x its step, torch "
              f"{row['clip overhead torch']:.2f}x")
        del fs
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
