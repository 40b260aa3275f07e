"""Run under mpirun by tests/test_distributed_mpi.py: argv out_dir.

Every rank checks adaptopt.distributed.ShardedOptimizer against the
single-process optimizer (computed locally on the same global gradients)
and raises on any difference; rank 0 writes a JSON summary.
"""

import json
import os
import sys

import numpy as np
from mpi4py import MPI

import adaptopt
from adaptopt.algorithms import SPECS
from adaptopt.distributed import ShardedOptimizer

comm = MPI.COMM_WORLD
RANK, WORLD = comm.rank, comm.size
OUT = sys.argv[1]
STEPS = 4
SHAPES = [(7, 5), (1,), (33,), (4, 4, 3), (2,), (129,)]


def params(dtype=np.float32):
    rng = np.random.default_rng(7)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def groups(ps):  # two groups, their own lr
    return [{"params": ps[:3]}, {"params": ps[3:], "lr": 3e-3}]


def global_grads(t, dtype=np.float32):
    """Step t's global gradients, 16 significant bits: any sum of up to 4
    quarter-copies is exact, whatever the order MPI adds them in."""
    rng = np.random.default_rng(100 + t)
    out = []
    for s in SHAPES:
        g = rng.standard_normal(s).astype(np.float32)
        g = (g.view(np.uint32) & np.uint32(0xFFFFFF00)).view(np.float32)
        out.append(g.astype(dtype))
    return out


def rank_grads(t, reduce):
    g = global_grads(t)
    if reduce == "sum":  # the ranks' parts sum to the global gradient
        return [x / np.float32(WORLD) for x in g]
    return g  # "mean" of equal copies, or None: the global gradient itself


def same(a, b, what):
    for k, (x, y) in enumerate(zip(a, b)):
        if not np.array_equal(x.view(np.uint32), y.view(np.uint32)):
            raise AssertionError(f"rank {RANK}/{WORLD} {what}: params[{k}] differ "
                                 f"(max {np.max(np.abs(x - y))})")


def run_all():
    summary = {}
    # every elementwise algorithm, each reduce mode: bitwise the single process
    for spec in SPECS:
        cls = getattr(adaptopt, spec.name)
        for reduce in ("mean", "sum", None):
            ref_p, sh_p = params(), params()
            ref = cls(groups(ref_p), lr=1e-2)
            sh = ShardedOptimizer(cls, groups(sh_p), comm=comm, reduce=reduce, lr=1e-2)
            for t in range(STEPS):
                ref.step(global_grads(t))
                sh.step(rank_grads(t, reduce))
            same(sh_p, ref_p, f"{spec.name} reduce={reduce}")
    summary["algorithms"] = len(SPECS)

    # state memory per rank: 1/N of the single-process state (shards of whole lines)
    big = [np.zeros(1 << 18, np.float32), np.zeros(12345, np.float32)]
    ref = adaptopt.Adam([b.copy() for b in big], lr=1e-3)
    sh = ShardedOptimizer(adaptopt.Adam, big, comm=comm, lr=1e-3)
    g = [np.ones_like(b) for b in big]
    ref.step(g)
    sh.step(g)
    full = sum(v.nbytes for st in ref.state.values() for v in st.values()
               if isinstance(v, np.ndarray))
    mine = sh.state_bytes()
    total = comm.allreduce(mine)
    if total != full:
        raise AssertionError(f"the shards hold {total} bytes of state, the full state {full}")
    if mine > full / WORLD + 2 * 64:
        raise AssertionError(f"rank {RANK} holds {mine} bytes of {full}")
    summary["state_bytes"] = comm.gather(mine, root=0)
    summary["full_state_bytes"] = full

    # checkpoints: per shard, and consolidated into a single-process optimizer and back
    d = os.path.join(OUT, f"n{WORLD}")
    if RANK == 0:
        os.makedirs(d, exist_ok=True)
    comm.Barrier()
    ref_p, a_p = params(), params()
    ref = adaptopt.AdamW(groups(ref_p), lr=1e-2, weight_decay=0.1)
    a = ShardedOptimizer(adaptopt.AdamW, groups(a_p), comm=comm, lr=1e-2, weight_decay=0.1)
    for t in range(2):
        ref.step(global_grads(t))
        a.step(rank_grads(t, "mean"))
    a.save(os.path.join(d, f"shard{RANK}.npz"))
    a.save_consolidated(os.path.join(d, "full.npz"))
    sd_shard, sd_full = a.state_dict(), a.consolidated_state_dict(root=0)
    sd_full = comm.bcast(sd_full, root=0)
    comm.Barrier()
    resumed = []
    for how in ("shard file", "consolidated file", "shard dict", "consolidated dict",
                "single-process file"):
        p = [x.copy() for x in a_p]
        b = ShardedOptimizer(adaptopt.AdamW, groups(p), comm=comm, lr=1e-2, weight_decay=0.1)
        if how == "shard file":
            b.load(os.path.join(d, f"shard{RANK}.npz"))
        elif how == "consolidated file":
            b.load_consolidated(os.path.join(d, "full.npz"))
        elif how == "shard dict":
            b.load_state_dict(sd_shard)
        elif how == "consolidated dict":
            b.load_state_dict(sd_full)
        else:  # the single-process optimizer's own checkpoint
            single = os.path.join(d, "single.npz")
            if RANK == 0:
                ref.save(single)
            comm.Barrier()
            b.load_consolidated(single)
        resumed.append((how, b, p))
    # the consolidated file in a single-process optimizer
    s_p = [x.copy() for x in a_p]
    s = adaptopt.AdamW(groups(s_p), lr=1e-2, weight_decay=0.1)
    s.load(os.path.join(d, "full.npz"))
    for t in range(2, 5):
        ref.step(global_grads(t))
        s.step(global_grads(t))
        a.step(rank_grads(t, "mean"))
        for _, b, _ in resumed:
            b.step(rank_grads(t, "mean"))
    same(a_p, ref_p, "uninterrupted")
    same(s_p, ref_p, "single-process from the consolidated checkpoint")
    for how, _, p in resumed:
        same(p, ref_p, f"resumed from the {how}")
    summary["resumed"] = [h for h, _, _ in resumed]

    # a shard of another layout is refused, naming it
    if WORLD > 1:
        other = comm.sendrecv(sd_shard, dest=(RANK + 1) % WORLD, source=(RANK - 1) % WORLD)
        try:
            a.load_state_dict(other)
        except ValueError as e:
            assert "another rank" in str(e), e
        else:
            raise AssertionError("another rank's shard was loaded")
    return summary


if __name__ == "__main__":
    summary = run_all()
    if RANK == 0:
        with open(os.path.join(OUT, f"mpi{WORLD}.json"), "w") as f:
            json.dump(summary, f)
    comm.Barrier()
