"""The experiments of the tutorials this project grew from, on adaptopt's optimizers.

Two tutorials: "AdaGrad, RMSprop, and Adam" (mini-batch linear regression,
its hand-written NumPy update rules and its common pitfalls) and "RMSProp
and Adagrad" (the 1-D quadratic).  ``python -m adaptopt demo`` runs every
experiment, prints its tables and writes one PNG plot each; from Python:

>>> from adaptopt import demo
>>> r = demo.run("quadratic-1d", quick=True)        # plain data: dicts, lists, floats
>>> print(demo.tables("quadratic-1d", r)[0].title)
f(x) = 0.5 x^2 from x0 = 5, lr = 1, 50 steps

Each experiment is a function of :mod:`adaptopt.demo.experiments` returning
plain data, with a table maker in ``report`` and a plot maker in ``plots``:

1. ``linear-regression``: the regression tutorial's problem, five optimizers.
2. ``tutorial-rules``: that tutorial's own NumPy rules next to adaptopt.
3. ``quadratic-1d``: the quadratic tutorial's trajectories.
4. The pitfalls: ``adagrad-collapse``, ``eps-sensitivity``,
   ``bias-correction``, ``weight-decay``, ``ill-conditioned``.
5. Low precision: ``low-precision`` (5a: small updates on bfloat16 weights,
   round to nearest against master weights and stochastic rounding) and
   ``state-precision`` (5b: float32, bfloat16 and int8 optimizer state side
   by side; digits MLP, seven optimizers; the regression problem).
"""

from __future__ import annotations

import os
from typing import Any

from . import experiments, plots, precision, report
from .plots import MISSING_HINT, have_matplotlib
from .tutorials import QUADRATIC_TUTORIAL, REGRESSION_TUTORIAL

__all__ = ["EXPERIMENTS", "NAMES", "TUTORIALS", "run", "tables", "plot", "plot_path",
           "have_matplotlib", "MISSING_HINT", "experiments", "plots", "report"]

#: The titles of the tutorials the experiments come from.
TUTORIALS = (REGRESSION_TUTORIAL, QUADRATIC_TUTORIAL)

#: name -> (number, title, function); in the order the demo runs them
EXPERIMENTS = {
    "linear-regression": ("1", f'Linear regression, mini-batch (from "{REGRESSION_TUTORIAL}")',
                          experiments.linear_regression),
    "tutorial-rules": ("2", f'The NumPy rules of "{REGRESSION_TUTORIAL}" vs adaptopt',
                       experiments.tutorial_rules),
    "quadratic-1d": ("3", f'1-D quadratic trajectories (from "{QUADRATIC_TUTORIAL}")',
                     experiments.quadratic_1d),
    "adagrad-collapse": ("4a", "Pitfall: AdaGrad's learning rate collapse",
                         experiments.adagrad_collapse),
    "eps-sensitivity": ("4b", "Pitfall: Adam's epsilon sensitivity", experiments.eps_sensitivity),
    "bias-correction": ("4c", "Pitfall: forgetting bias correction", experiments.bias_correction),
    "weight-decay": ("4d", "Pitfall: Adam + L2 vs AdamW", experiments.weight_decay),
    "ill-conditioned": ("4e", "Pitfall: ill-conditioned quadratic", experiments.ill_conditioned),
    "low-precision": ("5a", "Small updates on 16-bit weights: master weights, stochastic "
                      "rounding", experiments.low_precision),
    "state-precision": ("5b", "Optimizer state in float32, bfloat16 and int8",
                        precision.state_precision),
}
#: The experiments' names, in the order the demo runs them.
NAMES = tuple(EXPERIMENTS)


def _check(name: str) -> None:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")


def run(name: str, quick: bool = False, seed: int = 42) -> dict[str, Any]:
    """Run one experiment and return its numbers as plain data.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`, e.g. ``"linear-regression"``.
    quick : bool, default False
        Fewer epochs and steps: a fraction of a second per experiment.
    seed : int, default 42
        Seed of the ``numpy.random.RandomState`` that makes the data and
        the shuffles (42 is the tutorial's).  Deterministic experiments
        ignore it.

    Returns
    -------
    dict
        The experiment's settings and results: dicts, lists, floats and
        strings only, so ``json.dumps`` takes it as it is.

    Raises
    ------
    ValueError
        If ``name`` is not an experiment.

    See Also
    --------
    tables : the result as text tables.
    plot : the result as a PNG file.

    Examples
    --------
    >>> from adaptopt import demo
    >>> r = demo.run("quadratic-1d", quick=True)
    >>> [run["name"] for run in r["runs"]]
    ['Adagrad', 'RMSprop', 'Adam']
    >>> r["steps"]
    50
    """
    _check(name)
    return EXPERIMENTS[name][2](quick=quick, seed=seed)


def tables(name: str, result: dict[str, Any]) -> list[report.Table]:
    """The result of :func:`run` as text tables.

    Parameters
    ----------
    name : str
        The experiment's name, as given to :func:`run`.
    result : dict
        What :func:`run` returned for it.

    Returns
    -------
    list of adaptopt.demo.report.Table
        One or more tables; ``str(table)`` renders one as aligned text.

    Raises
    ------
    ValueError
        If ``name`` is not an experiment.

    See Also
    --------
    run, plot

    Examples
    --------
    >>> from adaptopt import demo
    >>> r = demo.run("eps-sensitivity", quick=True)
    >>> table, = demo.tables("eps-sensitivity", r)
    >>> table.headers[0], len(table.rows) == len(r["eps"])
    ('eps', True)
    """
    _check(name)
    return report.TABLES[name](result)


def plot_path(name: str, out_dir: str | os.PathLike[str]) -> str:
    """The path :func:`plot` writes the experiment's PNG to.

    Parameters
    ----------
    name : str
        The experiment's name.
    out_dir : str or path-like
        The directory.

    Returns
    -------
    str
        ``out_dir/<number>-<name>.png``.

    Raises
    ------
    ValueError
        If ``name`` is not an experiment.

    Examples
    --------
    >>> from adaptopt import demo
    >>> demo.plot_path("quadratic-1d", "plots")
    'plots/3-quadratic-1d.png'
    """
    _check(name)
    return os.path.join(out_dir, f"{EXPERIMENTS[name][0]}-{name}.png")


def plot(name: str, result: dict[str, Any], out_dir: str | os.PathLike[str]) -> str:
    """Write the experiment's PNG into ``out_dir`` and return its path.

    Needs matplotlib (``pip install "adaptopt[plot]"``); no pyplot and no
    display are used.

    Parameters
    ----------
    name : str
        The experiment's name.
    result : dict
        What :func:`run` returned for it.
    out_dir : str or path-like
        The directory, created if missing.

    Returns
    -------
    str
        The path of the PNG, :func:`plot_path`.

    Raises
    ------
    ValueError
        If ``name`` is not an experiment.
    ImportError
        If matplotlib is not installed (see :func:`have_matplotlib`).

    See Also
    --------
    run, tables

    Examples
    --------
    >>> import os, tempfile
    >>> from adaptopt import demo
    >>> r = demo.run("quadratic-1d", quick=True)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = demo.plot("quadratic-1d", r, d)
    ...     os.path.basename(path), os.path.getsize(path) > 10_000
    ('3-quadratic-1d.png', True)
    """
    path = plot_path(name, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    plots.PLOTS[name](result, path)
    return path
