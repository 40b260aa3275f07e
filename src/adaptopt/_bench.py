"""``adaptopt.bench()``: a quick look at adaptopt's speed on this machine.

One optimizer step of each algorithm, adaptopt's fused kernel against its
own NumPy reference (:mod:`adaptopt.reference`, the executable spec), at a
few sizes, in the spirit of ``bottleneck.bench()``.  Only public API is
used and nothing beyond NumPy is needed.  The peer suite (torch.optim,
DeepSpeed, the machine's roofline, plots) lives in the source repository:
``python bench/suite.py --help``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

__all__ = ["bench", "OPTIMIZERS", "DEFAULT_SIZES", "parse_size"]

#: name -> (class name in adaptopt and adaptopt.reference, keyword arguments)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "sgd": ("SGD", {"momentum": 0.9}),
}
#: in cache, around the last-level cache, beyond it
DEFAULT_SIZES = (4096, 65536, 1048576)


def parse_size(text: str) -> int:
    """A number of elements from ``"4096"``, ``"4K"`` (4096) or ``"1M"`` (1048576).

    Parameters
    ----------
    text : str
        Digits, optionally followed by ``K`` (x 1024) or ``M`` (x 1024**2).

    Returns
    -------
    int
        The number of elements, at least 1.

    Raises
    ------
    ValueError
        If ``text`` is not such a size.

    Examples
    --------
    >>> from adaptopt._bench import parse_size
    >>> parse_size("4K"), parse_size("1M"), parse_size("1000")
    (4096, 1048576, 1000)
    """
    t = str(text).strip().upper()
    mult = {"K": 1024, "M": 1024 ** 2}.get(t[-1:], 1)
    digits = t[:-1] if mult > 1 else t
    if not digits.isdigit() or int(digits) * mult < 1:
        raise ValueError(f"size must be a positive integer, optionally with K or M "
                         f"(4K = 4096, 1M = 1048576), got {text!r}")
    return int(digits) * mult


def _label(n: int) -> str:
    for unit, v in (("M", 1024 ** 2), ("K", 1024)):
        if n >= v and n % v == 0:
            return f"{n // v}{unit}"
    return str(n)


def _best(step, repeat: int) -> float:
    step()                              # state allocation out of the timing
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    return best


def bench(sizes: Sequence[int] = DEFAULT_SIZES, dtype: str | np.dtype = "float32",
          optimizers: Sequence[str] | None = None, repeat: int = 20,
          n_threads: int | None = None, file: TextIO | None = None) -> list[dict[str, Any]]:
    """Time one step of each optimizer against the NumPy reference and print a table.

    For each size and optimizer, one parameter array of that many elements
    is stepped by adaptopt's optimizer and by its twin in
    :mod:`adaptopt.reference` (the same gradient, separate copies of the
    parameter); each is stepped ``repeat`` times after a warm-up step, and
    its fastest step counts.

    Parameters
    ----------
    sizes : sequence of int, default (4096, 65536, 1048576)
        Elements per parameter array.
    dtype : {"float32", "float64"}, default "float32"
        The dtype of the parameters and gradients.
    optimizers : sequence of str, optional
        A subset of ``"adam"``, ``"adamw"``, ``"adagrad"``, ``"rmsprop"``,
        ``"sgd"`` (with momentum 0.9); all of them by default.
    repeat : int, default 20
        Timed steps per optimizer and size.
    n_threads : int, optional
        Threads for adaptopt (``n_threads=`` of the optimizers); by default
        :func:`adaptopt.get_num_threads`.  NumPy runs on one thread.
    file : file-like, optional
        Where the table goes (default ``sys.stdout``).

    Returns
    -------
    list of dict
        One record per optimizer and size: ``optimizer``, ``size``,
        ``dtype``, ``threads``, ``adaptopt_s`` and ``numpy_s`` (the fastest
        step, in seconds) and ``speedup`` (``numpy_s / adaptopt_s``).

    Raises
    ------
    ValueError
        For an unknown optimizer or dtype, a size or ``repeat`` below 1, or
        ``n_threads=0``.
    TypeError
        If ``n_threads`` is not an int or None.

    See Also
    --------
    adaptopt.show_config : how this build runs (SIMD path, OpenMP, threads).

    Notes
    -----
    ``python -m adaptopt bench`` is the same from the command line.  The
    peer suite (torch.optim single/foreach/fused, DeepSpeed, the memory
    roofline, JSON and plots) is ``python bench/suite.py`` in the source
    repository.

    Examples
    --------
    >>> import io
    >>> import adaptopt
    >>> out = io.StringIO()
    >>> records = adaptopt.bench(sizes=[1000], optimizers=["adam", "sgd"], repeat=2, file=out)
    >>> [(r["optimizer"], r["size"]) for r in records]
    [('Adam', 1000), ('SGD (momentum 0.9)', 1000)]
    >>> all(r["speedup"] > 0 for r in records)
    True
    """
    import adaptopt
    from adaptopt import reference

    from ._config import resolve_threads

    names = list(OPTIMIZERS) if optimizers is None else [str(o).lower() for o in optimizers]
    for name in names:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be one or more positive integers, got {sizes!r}")
    if isinstance(repeat, bool) or int(repeat) != repeat or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    threads = resolve_threads(n_threads, "n_threads")
    file = sys.stdout if file is None else file

    print(f"adaptopt {adaptopt.__version__} bench: one step, adaptopt vs its NumPy reference; "
          f"{dt.name}, best of {repeat}, SIMD {adaptopt.get_isa()}, {threads} thread(s)",
          file=file)
    rng = np.random.default_rng(0)
    records = []
    for n in sizes:
        p0 = rng.standard_normal(n).astype(dt)
        grads = [rng.standard_normal(n).astype(dt)]
        for name in names:
            cls_name, kw = OPTIMIZERS[name]
            fast = getattr(adaptopt, cls_name)([p0.copy()], n_threads=n_threads, **kw)
            ref = getattr(reference, cls_name)([p0.copy()], **kw)
            t_fast = _best(lambda: fast.step(grads), repeat)
            t_ref = _best(lambda: ref.step(grads), repeat)
            records.append({"optimizer": cls_name + (" (momentum 0.9)" if kw else ""),
                            "size": n, "dtype": dt.name, "threads": threads,
                            "adaptopt_s": t_fast, "numpy_s": t_ref, "speedup": t_ref / t_fast})
    headers = ("optimizer", "size", "adaptopt us", "NumPy us", "speedup")
    rows = [(r["optimizer"], _label(r["size"]), f"{r['adaptopt_s'] * 1e6:.1f}",
             f"{r['numpy_s'] * 1e6:.1f}", f"{r['speedup']:.{1 if r['speedup'] >= 1 else 2}f}x")
            for r in records]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    for row in (headers, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip(), file=file)
    return records
