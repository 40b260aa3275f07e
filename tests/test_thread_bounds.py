"""Thread counts are bounded (issue 11): never more than the usable CPUs.

Every case runs in a child interpreter: libgomp segfaults creating 100,000
threads and aborts ("Out of memory") at 10**9, which must show as a failed
test naming the signal, not a dead pytest."""
import os
import textwrap

import pytest
from conftest import run_isolated

from adaptopt import _config, _kernels

CPUS = len(os.sched_getaffinity(0))
# a step above every parallel threshold, so the OpenMP region really runs
STEP = """
import numpy as np, adaptopt
n = 1 << 17
for cls in (adaptopt.Adam, adaptopt.SGD):
    p = np.zeros(n, np.float32)
    opt = cls([p], {kw})
    for _ in range(2):
        opt.step([np.ones(n, np.float32)])
    assert p[0] != 0
print("threads", adaptopt.get_num_threads())
"""

needs_openmp = pytest.mark.skipif(not _kernels.openmp(), reason="built without OpenMP: "
                                  "every thread count resolves to 1")


def test_max_threads_is_the_usable_cpu_count():
    assert _config.MAX_THREADS == CPUS


@needs_openmp
@pytest.mark.parametrize("n", [100_000, 10**9, CPUS + 1])
def test_set_num_threads_huge_is_clamped_not_a_crash(n):
    r = run_isolated(textwrap.dedent(f"""
        import warnings, adaptopt
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            adaptopt.set_num_threads({n})
        assert adaptopt.get_num_threads() == {CPUS}, adaptopt.get_num_threads()
        assert any("n={n} exceeds the {CPUS} CPUs" in str(x.message) for x in w), w
        """) + STEP.format(kw="lr=1e-3"), timeout=120)
    assert f"threads {CPUS}" in r.stdout


@needs_openmp
@pytest.mark.parametrize("n", [100_000, 10**9])
def test_n_threads_huge_is_clamped_not_a_crash(n):
    r = run_isolated("import warnings; warnings.simplefilter('always')\n"
                     + STEP.format(kw=f"n_threads={n}"), timeout=120)
    assert f"n_threads={n} exceeds the {CPUS} CPUs" in r.stderr, r.stderr
    # one warning per requested value, not one per step
    assert r.stderr.count("exceeds the") <= 2, r.stderr


def test_torch_n_threads_huge_is_clamped_not_a_crash():
    pytest.importorskip("torch", reason="the torch drop-in needs torch")
    run_isolated("""
        import torch, adaptopt.torch as aopt
        p = torch.nn.Parameter(torch.zeros(1 << 17))
        opt = aopt.Adam([p], n_threads=100_000)
        for _ in range(2):
            p.grad = torch.ones(1 << 17)
            opt.step()
        assert p[0] != 0
        """, timeout=180)


@needs_openmp
@pytest.mark.parametrize("value,warning", [
    ("abc", "ignoring OMP_NUM_THREADS='abc'"),
    ("0", "ignoring OMP_NUM_THREADS='0'"),
    ("-3", "ignoring OMP_NUM_THREADS='-3'"),
    ("2.5", "ignoring OMP_NUM_THREADS='2.5'"),
    ("4,2", "exceeds the" if 4 > CPUS else None),
    ("100000", "OMP_NUM_THREADS='100000' exceeds the"),
    ("1000000000", "OMP_NUM_THREADS='1000000000' exceeds the"),
    ("99999999999999999999999", "exceeds the"),
    ("1", None),
])
def test_omp_num_threads_junk_warns_at_import_never_crashes(value, warning):
    r = run_isolated("import warnings; warnings.simplefilter('always')\n" + STEP.format(kw="lr=1e-3"),
                     env={"OMP_NUM_THREADS": value}, timeout=120)
    threads = int(r.stdout.split("threads")[1])
    assert 1 <= threads <= CPUS
    if warning is None:
        assert "RuntimeWarning" not in r.stderr, r.stderr
    else:
        assert warning in r.stderr and "RuntimeWarning" in r.stderr, r.stderr
    if value == "1":
        assert threads == 1


@needs_openmp
def test_kernel_clamps_the_thread_count_itself():
    """Defence in depth: the C entry point bounds n_threads too, whatever
    Python passes."""
    run_isolated("""
        import numpy as np, adaptopt
        from adaptopt import _kernels
        n = 1 << 17
        p = np.zeros(n, np.float32); g = np.ones(n, np.float32)
        opt = adaptopt.Adam([p]); opt.step([g]); opt.step([g])
        batches = opt._last.batches
        for nt in (100_000, 10**9, 2**31 - 1):
            _kernels.run(batches, nt)  # raises if C rejects the call
        """, timeout=120)


@needs_openmp
def test_clamped_count_gives_the_same_bits():
    run_isolated("""
        import warnings; warnings.simplefilter("ignore")
        import numpy as np, adaptopt
        rng = np.random.default_rng(0)
        n = 1 << 17
        g = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
        out = []
        for nt in (1, 100_000):
            p = np.zeros(n, np.float32)
            opt = adaptopt.Adam([p], n_threads=nt)
            for x in g:
                opt.step([x])
            out.append(p.view(np.uint32).copy())
        assert (out[0] == out[1]).all()
        """, timeout=120)
