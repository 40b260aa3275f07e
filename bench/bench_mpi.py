"""adaptopt.distributed.ShardedOptimizer under mpirun: per-rank state memory
and step time (reduce-scatter, the fused step of the shard, all-gather)
against the single-process optimizer, for one model size.

    mpirun -n 2 --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo \\
        python bench/bench_mpi.py [--numel 16777216] [--repeats 9]

Rank 0 prints medians over the repeats (each a few steps), the phases
timed separately with barriers between them.
"""

import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI

import adaptopt
from adaptopt.distributed import ShardedOptimizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--numel", type=int, default=1 << 24)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    comm = MPI.COMM_WORLD
    adaptopt.set_num_threads(1)
    sizes = [a.numel // 4, a.numel // 4, a.numel // 2 - 3, 3]
    params = [np.zeros(n, np.float32) for n in sizes]
    grads = [np.full(n, 1e-3, np.float32) for n in sizes]
    single = adaptopt.AdamW([p.copy() for p in params], lr=1e-3)
    sh = ShardedOptimizer(adaptopt.AdamW, params, comm=comm, lr=1e-3)
    single.step(grads)
    sh.step(grads)
    t_single, t_total, t_rs, t_step, t_ag = [], [], [], [], []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            single.step(grads)
        t_single.append((time.perf_counter() - t0) / a.steps)
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            sh.step(grads)
        comm.Barrier()
        t_total.append((time.perf_counter() - t0) / a.steps)
        # the phases, as step() runs them (one rank: no communication at all)
        if comm.size == 1:
            t_rs.append(0.0)
            t_ag.append(0.0)
            t0 = time.perf_counter()
            sh._inner.step(grads)
            t_step.append(time.perf_counter() - t0)
            continue
        sh._gflat[:a.numel] = 0
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Reduce_scatter_block(sh._gflat, sh._gshard, op=MPI.SUM)
        comm.Barrier()
        t_rs.append(time.perf_counter() - t0)
        shard = [np.zeros(b - s, np.float32) for s, b in sh.ranges.values()]
        t0 = time.perf_counter()
        sh._inner.step(shard)
        t_step.append(time.perf_counter() - t0)
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allgather(MPI.IN_PLACE, sh._flat)
        sh._copy_out()
        comm.Barrier()
        t_ag.append(time.perf_counter() - t0)
    full = sum(v.nbytes for st in single.state.values() for v in st.values()
               if isinstance(v, np.ndarray))
    mine = comm.gather(sh.state_bytes(), root=0)
    med = {k: comm.reduce(statistics.median(v), op=MPI.MAX, root=0) for k, v in
           (("single", t_single), ("total", t_total), ("rs", t_rs), ("step", t_step),
            ("ag", t_ag))}
    if comm.rank == 0:
        print(f"ranks {comm.size}, {a.numel / 1e6:.1f}M float32 parameters, AdamW, 1 thread "
              f"per rank; medians of {a.repeats} (slowest rank)")
        print(f"  state per rank: {max(mine) / 2**20:.1f} MiB of {full / 2**20:.1f} MiB "
              f"({max(mine) / full:.3f})")
        print(f"  single-process step {med['single'] * 1e3:7.1f} ms")
        ratio = med["total"] / med["single"]
        print(f"  sharded step        {med['total'] * 1e3:7.1f} ms (x{ratio:.2f}):"
              f" reduce-scatter {med['rs'] * 1e3:.1f}, shard step {med['step'] * 1e3:.1f}, "
              f"all-gather + copy-out {med['ag'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
