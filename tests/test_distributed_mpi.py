"""adaptopt.distributed.ShardedOptimizer over MPI (mpi4py, Open MPI).

tests/mpi_worker.py runs under ``mpirun -n 2`` and ``-n 4`` on loopback
(``--mca btl self,tcp --mca btl_tcp_if_include lo``, oversubscribed, a
timeout) and checks, on every rank: every elementwise algorithm with each
``reduce`` mode is bitwise the single-process optimizer given the same
global gradients; the state held per rank is 1/N of the single-process
state (the shards sum to it exactly); checkpoints per shard and
consolidated resume to the same bits, also through a single-process
optimizer.  tests/mpi_fault_worker.py kills a rank mid-run: mpirun must end
the job within FAULT_TIMEOUT and the checkpoint written before loads.
In this process (COMM_SELF): the hostile inputs.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI", reason="mpi4py (pip install mpi4py) over an MPI")

import adaptopt  # noqa: E402
from adaptopt.distributed import ShardedOptimizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from dist_launch import SKIP_REASON, multiprocess_enabled  # noqa: E402

TIMEOUT = 120        # seconds for one mpirun of tests/mpi_worker.py (about 6-9 s here)
FAULT_TIMEOUT = 60   # a killed rank must end the job within this


def mpirun(n, script, out, timeout):
    if not multiprocess_enabled():
        pytest.skip(SKIP_REASON)
    exe = shutil.which("mpirun")
    if exe is None:
        pytest.skip("mpirun not found (apt-get install openmpi-bin libopenmpi-dev)")
    cmd = [exe, "-n", str(n), "--oversubscribe", "--mca", "btl", "self,tcp",
           "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd + [sys.executable, os.path.join(HERE, script), str(out)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("n", [2, 4])
def test_sharded_optimizer_under_mpirun(tmp_path, n):
    r = mpirun(n, "mpi_worker.py", tmp_path, TIMEOUT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    summary = json.loads((tmp_path / f"mpi{n}.json").read_text())
    assert summary["algorithms"] >= 12 and len(summary["resumed"]) == 5
    per_rank, full = summary["state_bytes"], summary["full_state_bytes"]
    assert sum(per_rank) == full and max(per_rank) <= full / n + 128, per_rank


def test_killed_rank_ends_the_job_and_the_checkpoint_loads(tmp_path):
    r = mpirun(2, "mpi_fault_worker.py", tmp_path, FAULT_TIMEOUT)  # TimeoutExpired: a hang
    assert r.returncode != 0 and "finished" not in r.stdout, r.stdout + r.stderr
    assert "signal 9" in (r.stdout + r.stderr) or "Killed" in (r.stdout + r.stderr), r.stderr
    ps = [np.ones(1000, np.float32), np.ones((10, 10), np.float32)]
    opt = adaptopt.AdamW(ps, lr=1e-2)
    opt.load(tmp_path / "full.npz")  # written after step 2 (index 2): 3 steps
    assert all(st["step"] == 3 for st in opt.state.values())
    sharded = ShardedOptimizer(adaptopt.AdamW, [p.copy() for p in ps], comm=MPI.COMM_SELF,
                               lr=1e-2)
    sharded.load_consolidated(tmp_path / "full.npz")
    assert all(st["step"] == 3 for st in sharded.state.values())


# --- one process (COMM_SELF): the single-process optimizer exactly, hostile inputs
def test_one_rank_is_the_optimizer():
    rng = np.random.default_rng(0)
    a = [rng.standard_normal(s).astype(np.float64) for s in ((3, 4), (5,))]
    b = [x.copy() for x in a]
    ref = adaptopt.Adam(a, lr=0.1, amsgrad=True)
    sh = ShardedOptimizer(adaptopt.Adam, b, comm=MPI.COMM_SELF, lr=0.1, amsgrad=True)
    for _ in range(3):
        g = [rng.standard_normal(x.shape) for x in a]
        ref.step(g)
        sh.step(g)
    for x, y in zip(a, b):
        assert np.array_equal(x.view(np.uint64), y.view(np.uint64))
    sd = sh.consolidated_state_dict()
    assert set(sd["state"]) == {0, 1} and sd["state"][0]["max_exp_avg_sq"].shape == (3, 4)
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert np.array_equal(sd["state"][0][k], ref.state[0][k])


def test_shards_start_on_cache_lines():
    ps = [np.zeros(37, np.float32)]
    sh = ShardedOptimizer(adaptopt.SGD, ps, comm=MPI.COMM_SELF, lr=0.1)
    assert sh.shard_size % 16 == 0 and sh._flat.ctypes.data % 64 == 0


def test_hostile_inputs_change_nothing():
    p = np.ones(4, np.float32)
    sh = ShardedOptimizer(adaptopt.Adam, [p], comm=MPI.COMM_SELF, lr=0.1)
    bad = [([np.ones(4, np.float32)] * 2, ValueError, "grads has 2 entries"),
           ([np.ones(5, np.float32)], ValueError, r"grads\[0\] has dtype"),
           ([np.ones(4, np.float64)], ValueError, r"grads\[0\] has dtype"),
           ([None], TypeError, r"grads\[0\] must be a NumPy array"),
           (np.ones(4, np.float32), TypeError, "grads must be a sequence")]
    for grads, err, match in bad:
        with pytest.raises(err, match=match):
            sh.step(grads)
    assert np.array_equal(p, np.ones(4, np.float32)) and not sh.state
    with pytest.raises(TypeError, match="one dtype"):
        ShardedOptimizer(adaptopt.Adam, [p, np.ones(2)], comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="empty"):
        ShardedOptimizer(adaptopt.Adam, [p, np.ones(0, np.float32)], comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="reduce must be"):
        ShardedOptimizer(adaptopt.Adam, [p], comm=MPI.COMM_SELF, reduce="avg")
    with pytest.raises(TypeError, match="mpi4py intracommunicator"):
        ShardedOptimizer(adaptopt.Adam, [p], comm=None)
    with pytest.raises(TypeError, match="optimizer_class"):
        ShardedOptimizer(dict, [p], comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match="not elementwise"):
        ShardedOptimizer(adaptopt.Adafactor, [np.ones((4, 4), np.float32)], comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="lr"):
        ShardedOptimizer(adaptopt.Adam, [p], comm=MPI.COMM_SELF, lr=-1.0)


def test_bad_state_dict_changes_nothing():
    p = np.ones(4, np.float32)
    sh = ShardedOptimizer(adaptopt.Adam, [p], comm=MPI.COMM_SELF, lr=0.1)
    sh.step([np.ones(4, np.float32)])
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sh.state[0].items()}
    sd = sh.consolidated_state_dict()
    sd["state"][0]["exp_avg"] = np.ones(5, np.float32)
    with pytest.raises(ValueError):
        sh.load_state_dict(sd)
    shard = sh.state_dict()
    shard["shard"] = {**shard["shard"], "world": 2}
    with pytest.raises(ValueError, match="another rank or layout"):
        sh.load_state_dict(shard)
    with pytest.raises(TypeError, match="must be a dict"):
        sh.load_state_dict([1])
    for k, v in before.items():
        assert np.array_equal(sh.state[0][k], v)
