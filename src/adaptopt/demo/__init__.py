"""The seeds' experiments, rerun on adaptopt's optimizers.

``python -m adaptopt demo`` runs them all; from Python::

    from adaptopt import demo
    r = demo.run("quadratic-1d", quick=True)       # plain data: dicts, lists, floats
    for table in demo.tables("quadratic-1d", r):
        print(table)
    demo.plot("quadratic-1d", r, "out")            # writes out/3-quadratic-1d.png

Each experiment is a function of ``experiments`` returning plain data (its
numbers), with a table maker in ``report`` and a plot maker in ``plots``.

1. ``linear-regression`` -- seed 001's mini-batch linear regression.
2. ``seed-comparison`` -- seed 001's own NumPy rules next to adaptopt.
3. ``quadratic-1d`` -- seed 003's 1-D quadratic trajectories.
4. The pitfalls: ``adagrad-collapse``, ``eps-sensitivity``,
   ``bias-correction``, ``weight-decay``, ``ill-conditioned``.
"""

import os

from . import experiments, plots, report
from .plots import MISSING_HINT, have_matplotlib

__all__ = ["EXPERIMENTS", "NAMES", "run", "tables", "plot", "plot_path",
           "have_matplotlib", "MISSING_HINT", "experiments", "plots", "report"]

#: name -> (number, title, function); in the order the demo runs them
EXPERIMENTS = {
    "linear-regression": ("1", "Linear regression, mini-batch (seed 001)",
                          experiments.linear_regression),
    "seed-comparison": ("2", "Seed 001's NumPy rules vs adaptopt", experiments.seed_comparison),
    "quadratic-1d": ("3", "1-D quadratic trajectories (seed 003)", experiments.quadratic_1d),
    "adagrad-collapse": ("4a", "Pitfall: AdaGrad's learning rate collapse",
                         experiments.adagrad_collapse),
    "eps-sensitivity": ("4b", "Pitfall: Adam's epsilon sensitivity", experiments.eps_sensitivity),
    "bias-correction": ("4c", "Pitfall: forgetting bias correction", experiments.bias_correction),
    "weight-decay": ("4d", "Pitfall: Adam + L2 vs AdamW", experiments.weight_decay),
    "ill-conditioned": ("4e", "Pitfall: ill-conditioned quadratic", experiments.ill_conditioned),
}
NAMES = tuple(EXPERIMENTS)


def _check(name):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")


def run(name, quick=False, seed=42):
    """Run one experiment; its numbers as plain data."""
    _check(name)
    return EXPERIMENTS[name][2](quick=quick, seed=seed)


def tables(name, result):
    """The experiment's result as ``report.Table`` objects (``str()`` renders)."""
    _check(name)
    return report.TABLES[name](result)


def plot_path(name, out_dir):
    _check(name)
    return os.path.join(out_dir, f"{EXPERIMENTS[name][0]}-{name}.png")


def plot(name, result, out_dir):
    """Write the experiment's PNG into ``out_dir`` (created if missing); its path."""
    path = plot_path(name, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    plots.PLOTS[name](result, path)
    return path
