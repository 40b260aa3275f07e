"""Adadelta: torch.optim.Adadelta (torch 2.13, ``_single_tensor_adadelta``)."""

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec


def update(p, g, state, t, h):
    rho, eps = h["rho"], h["eps"]
    if h["maximize"]:
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    v, u = state["square_avg"], state["acc_delta"]
    v *= rho
    v += (1 - rho) * g * g
    std = np.sqrt(v + eps)
    delta = np.sqrt(u + eps)
    delta /= std
    delta *= g
    u *= rho
    u += (1 - rho) * delta * delta
    p += -h["lr"] * delta


def _rho(name, value):
    value = c.nonneg(name, value)
    if value > 1:
        raise ValueError(f"{name} must be <= 1, got {value!r}")
    return value


ADADELTA = Spec(
    "Adadelta", kernel="adadelta", torch="Adadelta", update=update,
    hyper={"lr": Hyper(1.0, c.learning_rate), "rho": Hyper(0.9, _rho),
           "eps": Hyper(1e-6, c.nonneg), "weight_decay": Hyper(0.0, c.nonneg),
           "maximize": Hyper(False, c.flag)},
    flags=lambda h: [n for n, on in (("maximize", h["maximize"]),
                                     ("l2", h["weight_decay"] != 0)) if on],
    fixed=lambda h: {"rho": h["rho"], "one_minus_rho": 1 - h["rho"], "eps": h["eps"],
                     "weight_decay": h["weight_decay"], "neg_lr": -h["lr"]},
    doc=r"""
    Adadelta (Zeiler), torch.optim.Adadelta's definition.

    .. math::

        g &\leftarrow g + \lambda p \quad (\lambda \ne 0) \\
        v &\leftarrow \rho v + (1-\rho)\, g^2 \\
        \Delta &= \frac{\sqrt{u + \epsilon}}{\sqrt{v + \epsilon}}\, g \\
        u &\leftarrow \rho u + (1-\rho)\, \Delta^2 \\
        p &\leftarrow p - \eta \Delta
    """, references="Zeiler, ADADELTA: An Adaptive Learning Rate Method, arXiv:1212.5701, 2012.")
