"""Adagrad: torch.optim.Adagrad (torch 2.13, ``_single_tensor_adagrad``)."""

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec


def update(p, g, state, t, h):
    if h["maximize"]:
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
    s = state["sum"]
    s += g * g
    std = np.sqrt(s) + h["eps"]
    p += (-clr * g) / std


ADAGRAD = Spec(
    "Adagrad", kernel="adagrad", torch="Adagrad", update=update,
    hyper={"lr": Hyper(1e-2, c.learning_rate), "lr_decay": Hyper(0.0, c.nonneg),
           "weight_decay": Hyper(0.0, c.nonneg),
           "initial_accumulator_value": Hyper(0.0, c.nonneg), "eps": Hyper(1e-10, c.nonneg),
           "maximize": Hyper(False, c.flag)},
    flags=lambda h: [n for n, on in (("maximize", h["maximize"]),
                                     ("l2", h["weight_decay"] != 0)) if on],
    fixed=lambda h: {"weight_decay": h["weight_decay"], "eps": h["eps"]},
    per_step=lambda h, t, s: (-(h["lr"] / (1 + (t - 1) * h["lr_decay"])),),
    step_scalars=("neg_clr",),
    init={"sum": lambda h: h["initial_accumulator_value"]},
    eager_state=True,
    doc=r"""
    Adagrad (Duchi et al.), torch.optim.Adagrad's definition.

    .. math::

        s &\leftarrow s + g^2 \\
        p &\leftarrow p - \frac{\eta}{1 + (t-1)\,\delta}\, \frac{g}{\sqrt{s} + \epsilon}
    """, references="Duchi, Hazan & Singer, Adaptive Subgradient Methods for Online Learning "
                    "and Stochastic Optimization, JMLR 2011.")
