"""Adamax: torch.optim.Adamax (torch 2.13, ``_single_tensor_adamax``)."""


import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec
from ._common import lerp


def update(p, g, state, t, h):
    b1, b2 = h["betas"]
    if h["maximize"]:
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    m, u = state["exp_avg"], state["exp_inf"]
    m[...] = lerp(m, g, 1 - b1)
    u *= b2
    np.maximum(u, np.abs(g) + h["eps"], out=u)     # torch.maximum: NaN in either wins
    clr = h["lr"] / (1 - b1 ** t)
    p += (-clr * m) / u


ADAMAX = Spec(
    "Adamax", kernel="adamax", torch="Adamax", update=update,
    hyper={"lr": Hyper(2e-3, c.learning_rate), "betas": Hyper((0.9, 0.999), c.betas),
           "eps": Hyper(1e-8, c.nonneg), "weight_decay": Hyper(0.0, c.nonneg),
           "maximize": Hyper(False, c.flag)},
    flags=lambda h: [n for n, on in (("maximize", h["maximize"]),
                                     ("l2", h["weight_decay"] != 0)) if on],
    fixed=lambda h: {"one_minus_beta1": 1 - h["betas"][0], "beta2": h["betas"][1],
                     "eps": h["eps"], "weight_decay": h["weight_decay"]},
    per_step=lambda h, t, s: (-(h["lr"] / (1 - h["betas"][0] ** t)),),
    step_scalars=("neg_clr",),
    doc=r"""
    Adamax (Kingma & Ba): Adam with the infinity norm, torch.optim.Adamax's definition.

    .. math::

        g &\leftarrow g + \lambda p \quad (\lambda \ne 0) \\
        m &\leftarrow \mathrm{lerp}(m, g, 1-\beta_1), \quad
        u \leftarrow \max(\beta_2 u,\ |g| + \epsilon) \\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\, \frac{m}{u}

    The maximum propagates NaN from either side (``torch.maximum``).
    """, references="Kingma & Ba, Adam: A Method for Stochastic Optimization, ICLR 2015 "
                    "(section 7.1).")
