"""Run-time configuration: threads, the SIMD path, and show_config()."""

from __future__ import annotations

import os
import platform
import sys
import warnings
from typing import Any, Literal

import numpy as np

from . import _kernels

__all__ = ["get_num_threads", "set_num_threads", "get_isa", "set_isa",
           "available_isas", "show_config"]

_num_threads = None  # None: the default, resolved by resolve_threads


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# The bound on every thread count: the CPUs this process may run on (its
# affinity mask, read at import), the count libgomp's omp_get_num_procs()
# reports.  More threads than that cannot speed up a memory-bound kernel, and
# an unbounded count crashes the OpenMP runtime (libgomp segfaults creating
# 100,000 threads and aborts with "Out of memory" at 10**9).  A larger request,
# from set_num_threads, n_threads= or OMP_NUM_THREADS, is clamped to it with
# a RuntimeWarning (once per requested value).
MAX_THREADS = _cpu_count()
_warned = set()
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_stacklevel():
    """The stacklevel of the first frame outside adaptopt, for warnings.warn
    called from a function of this module (Python 3.12's skip_file_prefixes).
    Like warnings, it does not count importlib's frames."""
    f, level = sys._getframe(2), 2
    while f is not None:
        name = f.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            f = f.f_back
            continue
        if os.path.dirname(os.path.abspath(name)) != _PACKAGE_DIR:
            break
        f, level = f.f_back, level + 1
    return level


def _clamp(n, what):
    if n > MAX_THREADS:
        if (what, n) not in _warned:
            _warned.add((what, n))
            warnings.warn(f"{what}={n} exceeds the {MAX_THREADS} CPUs this process can use; "
                          f"adaptopt uses {MAX_THREADS} threads", RuntimeWarning,
                          stacklevel=_user_stacklevel())
        return MAX_THREADS
    return n


def _threads_from_env():
    """OMP_NUM_THREADS as libgomp reads it (a positive integer, or a list
    "4,2" whose first entry counts here), checked: junk is ignored by
    libgomp with a message on stderr; we say so as a warning, and clamp a
    count above MAX_THREADS.  Never raises: a bad environment must not stop
    the import."""
    if not _kernels.openmp():
        return 1
    raw = os.environ.get("OMP_NUM_THREADS")
    default = min(max(1, _kernels.max_threads()), MAX_THREADS)
    if raw is None or not raw.strip():
        return default
    first = raw.split(",")[0].strip()
    if not first.isdigit() or int(first) == 0:
        warnings.warn(f"ignoring OMP_NUM_THREADS={raw!r}: not a positive integer; "
                      f"adaptopt uses {default} threads", RuntimeWarning,
                      stacklevel=_user_stacklevel())
        return default
    if int(first) > MAX_THREADS:
        warnings.warn(f"OMP_NUM_THREADS={raw!r} exceeds the {MAX_THREADS} CPUs this process "
                      f"can use; adaptopt uses {MAX_THREADS} threads", RuntimeWarning,
                      stacklevel=_user_stacklevel())
        return MAX_THREADS
    return default


# OMP_NUM_THREADS checked once, at import (the warnings); the default itself
# is read from the runtime at each step (resolve_threads), bounded the same way
_DEFAULT_THREADS = _threads_from_env()


def resolve_threads(n_threads=None, name="n_threads"):
    """The one place thread counts are resolved (scikit-learn's convention).

    None: set_num_threads()'s value, else the OpenMP runtime's default at
    this step (omp_get_max_threads: OMP_NUM_THREADS or the usable CPUs, or
    what threadpoolctl.threadpool_limits or, through the shared runtime,
    torch.set_num_threads set); a negative n counts back from the CPU count
    (-1: all); 0 raises.  Counts above MAX_THREADS (the usable CPUs) are
    clamped to it (with a RuntimeWarning when asked for explicitly).
    Without OpenMP the answer is always 1.
    """
    if n_threads is None:
        n_threads = _num_threads
        if n_threads is None:  # read at each step: threadpool_limits() applies
            if not _kernels.openmp():
                return 1
            return min(max(1, _kernels.max_threads()), MAX_THREADS)
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"{name} must be an int or None, got {n_threads!r}")
    n_threads = int(n_threads)
    if n_threads == 0:
        raise ValueError(f"{name} must not be 0: use None for the default, "
                         "a positive count, or -1 for all CPUs")
    if n_threads < 0:
        n_threads = max(1, _cpu_count() + 1 + n_threads)
    if n_threads > MAX_THREADS:
        n_threads = _clamp(n_threads, name)
    return n_threads if _kernels.openmp() else 1


def set_num_threads(n: int | None) -> None:
    """Set the thread count of every optimizer created without ``n_threads=``.

    Parameters
    ----------
    n : int or None
        A positive count; a negative one counts back from the number of
        usable CPUs (-1: all of them); None goes back to the default,
        ``OMP_NUM_THREADS`` or else the number of CPUs OpenMP sees.  A count
        above the usable CPUs (``MAX_THREADS``) is clamped to it, with a
        RuntimeWarning.  A build without OpenMP always runs on one thread.

    Raises
    ------
    ValueError
        If ``n`` is 0.
    TypeError
        If ``n`` is not an int or None.

    See Also
    --------
    get_num_threads : the count in effect.
    show_config : reports it, with whether the build has OpenMP.

    Notes
    -----
    Results are bitwise identical for any thread count.  Small arrays are
    stepped on one thread whatever the setting: an algorithm and dtype only
    go parallel from a size where a second thread pays
    (``show_config()["parallel_threshold"]``).

    Examples
    --------
    >>> import adaptopt
    >>> adaptopt.set_num_threads(1)
    >>> adaptopt.get_num_threads()
    1
    >>> adaptopt.set_num_threads(None)          # back to the default
    """
    global _num_threads
    if n is not None:
        resolved = resolve_threads(n, "n")
        if n > 0:  # a negative count stays relative to the CPU count
            n = resolved
    _num_threads = n


def get_num_threads() -> int:
    """The thread count an optimizer created without ``n_threads=`` uses.

    Returns
    -------
    int
        :func:`set_num_threads`'s value if set, else ``OMP_NUM_THREADS``,
        else the number of CPUs OpenMP sees; always 1 without OpenMP.

    See Also
    --------
    set_num_threads

    Examples
    --------
    >>> import adaptopt
    >>> adaptopt.get_num_threads() >= 1
    True
    """
    return resolve_threads(None)


def available_isas() -> list[str]:
    """The SIMD paths this build has and this CPU runs, slowest first.

    Returns
    -------
    list of str
        A subset of ``["scalar", "avx2", "avx512"]``; ``"scalar"`` is always
        there, and the last one is the default.

    See Also
    --------
    get_isa, set_isa

    Examples
    --------
    >>> import adaptopt
    >>> adaptopt.available_isas()[0]
    'scalar'
    """
    return [name for i, name in enumerate(_kernels.ISAS) if _kernels.isa_supported(i)]


def get_isa() -> str:
    """The SIMD path the kernels use now.

    Returns
    -------
    str
        ``"scalar"``, ``"avx2"`` or ``"avx512"``: the best one this CPU runs,
        unless :func:`set_isa` or ``ADAPTOPT_ISA`` chose another.

    See Also
    --------
    set_isa, available_isas

    Examples
    --------
    >>> import adaptopt
    >>> adaptopt.get_isa() in adaptopt.available_isas()
    True
    """
    return _kernels.ISAS[_kernels.get_isa()]


def set_isa(name: Literal["scalar", "avx2", "avx512"] | None) -> None:
    """Force the SIMD path of every kernel (process-wide).

    Every path gives bit for bit the same results (the reference's); this
    is for testing and measuring them.  The environment variable
    ``ADAPTOPT_ISA`` does the same at import.

    Parameters
    ----------
    name : {"scalar", "avx2", "avx512"} or None
        The path; None: the best one this CPU runs.

    Raises
    ------
    ValueError
        If ``name`` is not one of these, or is not compiled into this build
        (e.g. ``"avx2"`` on aarch64).
    RuntimeError
        If the path is compiled in but this CPU cannot run it.

    See Also
    --------
    get_isa, available_isas

    Examples
    --------
    >>> import adaptopt
    >>> adaptopt.set_isa("scalar")
    >>> adaptopt.get_isa()
    'scalar'
    >>> adaptopt.set_isa(None)                  # the best this CPU runs
    >>> adaptopt.get_isa() == adaptopt.available_isas()[-1]
    True
    """
    if name is None:
        name = available_isas()[-1]
    if name not in _kernels.ISAS:
        raise ValueError(f"isa must be one of {list(_kernels.ISAS)} or None, got {name!r}")
    rc = _kernels.set_isa(_kernels.ISAS.index(name))
    if rc == _kernels.ENOISA:
        compiled = [n for i, n in enumerate(_kernels.ISAS) if _kernels.isa_compiled(i)]
        raise ValueError(f"isa {name!r} is not compiled into this build of adaptopt "
                         f"(compiled: {compiled})")
    if rc == _kernels.ECPU:
        raise RuntimeError(f"isa {name!r} is compiled in but this CPU cannot run it "
                           f"(available: {available_isas()})")


def _isa_from_env():
    name = os.environ.get("ADAPTOPT_ISA", "").strip().lower()
    if name:
        try:
            set_isa(name)
        except (ValueError, RuntimeError) as e:
            warnings.warn(f"ignoring ADAPTOPT_ISA={name!r}: {e}; using {get_isa()!r}",
                          RuntimeWarning, stacklevel=3)


_OPENMP_LIBS = ("libgomp", "libomp", "libiomp", "vcomp")


def openmp_runtimes():
    """Paths of every OpenMP runtime library loaded in this process (Linux).

    More than one means more than one thread pool on the same cores."""
    try:
        with open("/proc/self/maps") as f:
            names = {line.split()[-1] for line in f
                     if line.rsplit("/", 1)[-1].startswith(_OPENMP_LIBS)}
    except OSError:
        return []
    return sorted({os.path.realpath(n) for n in names if n.startswith("/") and ".so" in n})


def openmp_runtime():
    """(path, origin) of the OpenMP runtime adaptopt's kernels call, or None.

    The loader shares one libgomp.so.1 between every library that needs
    that soname: adaptopt's wheel bundles one in adaptopt.libs/, torch's in
    torch/lib/, and the first one loaded serves all (tools/wheel/repair.py).
    Found when the extension is loaded (Python loads it RTLD_NOW, so its
    calls are bound then), the way the loader binds them: the process's
    global scope first, then the extension's own dependencies (dladdr on
    omp_get_max_threads)."""
    return _RUNTIME


def _find_runtime():
    if not _kernels.openmp():
        return None
    try:
        import ctypes

        class DlInfo(ctypes.Structure):
            _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                        ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

        fn = None
        for scope in (None, _kernels.__file__):
            try:
                fn = ctypes.CDLL(scope).omp_get_max_threads
                break
            except (AttributeError, OSError):
                continue
        dladdr = ctypes.CDLL(None).dladdr
        info = DlInfo()
        if fn is None or not dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)):
            return None
        path = os.path.realpath(info.fname.decode())
    except (AttributeError, OSError, TypeError, ValueError):
        return None  # no dladdr (Windows), or no such symbol
    parts = path.split(os.sep)
    if "adaptopt.libs" in parts:
        origin = "bundled with adaptopt"
    elif len(parts) > 2 and parts[-3:-1] == ["torch", "lib"]:
        origin = "torch's"
    elif path.startswith(("/usr/", "/lib")):
        origin = "the system's"
    else:
        origin = "other"
    return path, origin


_RUNTIME = _find_runtime()


def parallel_thresholds():
    """{algorithm: {dtype: elements}}: a batch runs on several threads from this size on."""
    return {algo: {dt: _kernels.get_threshold(code, d)
                   for d, dt in enumerate(("float32", "float64"))}
            for algo, code in _kernels.ALGOS.items()}


def format_thresholds(table):
    """'adam 8192/2048, ...': float32/float64 elements per algorithm."""
    return ", ".join(f"{a} {'/'.join(map(str, d.values()))}" for a, d in table.items())


def show_config(mode: Literal["stdout", "dicts"] = "stdout") -> dict[str, Any] | None:
    """Print, or return, how adaptopt was built and how it runs here.

    NumPy's name and modes (``numpy.show_config``).  ``python -m adaptopt
    info`` prints the same; ``--json`` gives the dict.

    Parameters
    ----------
    mode : {"stdout", "dicts"}, default "stdout"
        ``"stdout"`` prints one line per entry and returns None;
        ``"dicts"`` returns the entries as a dict.

    Returns
    -------
    dict or None
        With ``mode="dicts"``: ``version``, ``python``, ``numpy``,
        ``platform``, ``compiler``, ``flags`` (the kernels' compile flags),
        ``openmp`` (bool: built with OpenMP), ``num_threads``
        (:func:`get_num_threads`), ``parallel_threshold`` (``{algorithm:
        {dtype: elements}}``, the sizes from which a step goes parallel),
        ``openmp_runtime`` (the OpenMP libraries loaded in this process),
        ``isa`` (:func:`get_isa`), ``isa_available``
        (:func:`available_isas`) and ``isa_compiled``.

    Raises
    ------
    ValueError
        If ``mode`` is neither.

    See Also
    --------
    get_num_threads, get_isa, available_isas

    Examples
    --------
    >>> import adaptopt
    >>> info = adaptopt.show_config(mode="dicts")
    >>> info["version"] == adaptopt.__version__, isinstance(info["openmp"], bool)
    (True, True)
    >>> info["isa"] == adaptopt.get_isa()
    True
    """
    from . import __version__
    info = {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "compiler": _kernels.compiler(),
        "flags": _kernels.build_flags(),
        "openmp": _kernels.openmp(),
        "num_threads": get_num_threads(),
        "parallel_threshold": parallel_thresholds(),
        "openmp_runtime": openmp_runtimes(),
        "openmp_runtime_in_use": (lambda r: r and f"{r[0]} ({r[1]})")(openmp_runtime()),
        "isa": get_isa(),
        "isa_available": available_isas(),
        "isa_compiled": [n for i, n in enumerate(_kernels.ISAS) if _kernels.isa_compiled(i)],
    }
    if mode == "dicts":
        return info
    if mode != "stdout":
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    width = max(map(len, info))
    for k, v in info.items():
        if k == "parallel_threshold":
            v = format_thresholds(v) + " (float32/float64 elements)"
        print(f"{k:<{width}} : {', '.join(v) if isinstance(v, list) else v}")
