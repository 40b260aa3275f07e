"""Run under mpirun by tests/test_distributed_mpi.py: argv out_dir.

ShardedOptimizer training on every rank; after step 2 each rank saves its
shard and rank 0 the consolidated checkpoint; at step 3 the last rank kills
itself (SIGKILL, no cleanup).  The others are then inside a collective:
Open MPI's mpirun must end the job (a non-zero exit), never hang.
"""

import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import adaptopt
from adaptopt.distributed import ShardedOptimizer

comm = MPI.COMM_WORLD
out = sys.argv[1]
params = [np.ones(1000, np.float32), np.ones((10, 10), np.float32)]
opt = ShardedOptimizer(adaptopt.AdamW, params, comm=comm, lr=1e-2)
for t in range(100):
    if t == 3 and comm.rank == comm.size - 1:
        os.kill(os.getpid(), signal.SIGKILL)
    opt.step([np.full_like(p, 0.5 + t) for p in params])
    if t == 2:
        opt.save(os.path.join(out, f"shard{comm.rank}.npz"))
        opt.save_consolidated(os.path.join(out, "full.npz"))
        comm.Barrier()
print("rank", comm.rank, "finished: the kill was not noticed", flush=True)
