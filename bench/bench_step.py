"""One step of each optimizer at 4K, 1M and 16M float32 elements.

adaptopt against its NumPy reference and torch.optim (single-tensor,
foreach, fused; when torch is installed), measured interleaved in one run
by ``bench/suite.py``: ns per element of each, and adaptopt's speedup
over each, side by side.

    python bench/bench_step.py                  # all CPUs
    python bench/bench_step.py --threads 1 --sizes 4K,64K --json step.json
"""
import argparse
import json
import sys

import suite as B  # bench/suite.py, beside this script

PEERS = ["numpy", "torch-single", "torch-foreach", "torch-fused"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", default="all", help="comma list (default all)")
    p.add_argument("--sizes", default="4K,1M,16M")
    p.add_argument("--dtypes", default="float32")
    p.add_argument("--threads", default=None, help="one thread count (default: all CPUs)")
    p.add_argument("--json", metavar="PATH")
    opts = p.parse_args(argv)
    threads = opts.threads or str(B.show_config(mode="dicts")["num_threads"])
    if "," in threads:
        p.error("--threads: one thread count")
    argv = ["--algos", opts.algos, "--sizes", opts.sizes, "--dtypes", opts.dtypes,
            "--threads", threads, "--impls", ",".join(["adaptopt", "roofline"] + PEERS),
            "--no-construct", "--no-progress"]
    args = B.build_parser().parse_args(argv)
    args.argv = argv
    plan = B._resolve(args)
    records, meta = B.run(args, plan, out=lambda s: None)
    steps = [r for r in records if r["kind"] == "step"]
    peers = [x for x in PEERS if any(r["impl"] == x for r in steps)]
    labels = [B.IMPLS[x].label for x in ["adaptopt"] + peers]
    print(f"\none optimizer step, {args.threads[0]} thread(s): ns per element (median), "
          "then adaptopt's speedup over each peer")
    print(f"{'algorithm':<17}{'dtype':<8}{'size':>6}" + "".join(f"{x:>14}" for x in labels)
          + " |" + "".join(f"{x:>14}" for x in labels[1:]))
    keys = sorted({(r["algo"], r["dtype"], r["n_elements"]) for r in steps},
                  key=lambda k: (list(B.ALGOS).index(k[0]), k[1], k[2]))
    for algo, dt, n in keys:
        recs = {r["impl"]: r for r in steps
                if (r["algo"], r["dtype"], r["n_elements"]) == (algo, dt, n)}
        a = recs.get("adaptopt")
        ns = "".join(f"{recs[x]['ns_per_element']:14.3f}" if x in recs else f"{'-':>14}"
                     for x in ["adaptopt"] + peers)
        ratio = "".join(f"{recs[x]['median_s'] / a['median_s']:13.2f}x" if x in recs and a
                        else f"{'-':>14}" for x in peers)
        print(f"{algo:<17}{dt:<8}{B.size_label(1, n):>6}{ns} |{ratio}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
