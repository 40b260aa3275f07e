"""One OpenMP runtime, visible to threadpoolctl, with and without torch.

adaptopt's kernels need libgomp.so.1.  A source build finds the system's;
the wheel bundles one under that same soname (tools/wheel/repair.py), and
torch's wheel does too, so the loader shares whichever is loaded first: one
runtime and one thread pool in a process that imports both, in either
order.  threadpoolctl must list that runtime, and threadpool_limits(1) must
limit adaptopt's steps (the default thread count is read from the runtime
at every step).  Each check runs in a fresh interpreter, since import order
decides which library the loader picks.

Linux only: the thread counts are read from /proc/self/task.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from adaptopt import _kernels

pytestmark = [
    pytest.mark.skipif(not _kernels.openmp(), reason="built without OpenMP"),
    pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                       reason="needs /proc/self/task (Linux) to count threads"),
]

ORDERS = {"adaptopt only": "import adaptopt",
          "torch first": "import torch, adaptopt",
          "adaptopt first": "import adaptopt, torch"}

PROBE = """
import json, os
import numpy as np
import threadpoolctl
from adaptopt import _config

def threads():
    return len(os.listdir("/proc/self/task"))

def step():
    # far above every parallel threshold; n_threads left to the default
    n = 1 << 18
    adaptopt.Adam([np.zeros(n, np.float32)]).step([np.ones(n, np.float32)])

out = {"in_use": _config.openmp_runtime(), "loaded": _config.openmp_runtimes()}
info = threadpoolctl.threadpool_info()
out["threadpoolctl"] = [(os.path.realpath(d["filepath"]), d["num_threads"])
                        for d in info if d["user_api"] == "openmp"]
with threadpoolctl.threadpool_limits(1):
    out["limited_num_threads"] = adaptopt.get_num_threads()
    before = threads()
    step()
    out["limited_new_threads"] = threads() - before
out["num_threads"] = adaptopt.get_num_threads()
before = threads()
step()
out["new_threads"] = threads() - before
if "torch" in globals():
    torch.ones(1 << 20).add_(1)   # torch's own parallel region, same pool
    out["after_torch_threads"] = threads() - before
out["loaded_at_end"] = _config.openmp_runtimes()
print(json.dumps(out))
"""


def probe(order):
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    if "torch" in order:
        pytest.importorskip("torch", reason="torch is not installed")
    # 2 threads whatever the machine has, so a second thread must appear
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop("OMP_THREAD_LIMIT", None)
    code = ORDERS[order] + "\n" + textwrap.dedent(PROBE)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("order", list(ORDERS))
def test_one_runtime_and_threadpoolctl_lists_it(order):
    out = probe(order)
    assert out["in_use"] is not None, out
    path, origin = out["in_use"]
    assert out["loaded"] == [path], f"{order}: several OpenMP runtimes loaded: {out['loaded']}"
    assert out["loaded_at_end"] == [path], out
    assert [p for p, _ in out["threadpoolctl"]] == [path], out["threadpoolctl"]
    if order == "torch first":
        assert origin == "torch's", out   # adaptopt joined torch's runtime
    if order == "adaptopt first" and "adaptopt.libs" in path:
        assert out["after_torch_threads"] == out["new_threads"], out  # torch joined adaptopt's pool


@pytest.mark.parametrize("order", list(ORDERS))
def test_threadpool_limits_limits_adaptopt(order):
    """Under threadpool_limits(1) a large step starts no thread; after it,
    the same step starts OpenMP's second thread (which shows the count can
    see one)."""
    out = probe(order)
    assert out["limited_num_threads"] == 1, out
    assert out["limited_new_threads"] == 0, out
    assert out["num_threads"] == 2, out
    assert out["new_threads"] == 1, out
