"""Rprop: torch.optim.Rprop (torch 2.13, ``_single_tensor_rprop``, capturable=False)."""

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec


def torch_sign(x):
    """torch.sign: +1, -1, or +0 for +-0 AND for NaN (np.sign gives NaN)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def update(p, g, state, t, h):
    T = p.dtype.type
    etaminus, etaplus = T(h["etas"][0]), T(h["etas"][1])
    lo, hi = T(h["step_sizes"][0]), T(h["step_sizes"][1])
    if h["maximize"]:
        g = -g
    prev, step_size = state["prev"], state["step_size"]
    sign = torch_sign(g * prev)
    sign[sign > 0] = etaplus
    sign[sign < 0] = etaminus
    sign[sign == 0] = 1
    step_size *= sign
    # clamp_(lo, hi): NaN propagates; lo > hi gives hi
    step_size[...] = np.where(step_size < lo, lo, step_size)
    step_size[...] = np.where(step_size > hi, hi, step_size)
    g = g.copy()
    g[sign == etaminus] = 0
    p += -torch_sign(g) * step_size
    prev[...] = g


def _etas(name, value):
    value = c.pair(c.positive, c.positive, "a pair (etaminus, etaplus)")(name, value)
    if not value[0] < 1.0 < value[1]:
        raise ValueError(f"{name} must satisfy 0 < etaminus < 1 < etaplus, got {value!r}")
    return value


RPROP = Spec(
    "Rprop", kernel="rprop", torch="Rprop", update=update,
    hyper={"lr": Hyper(1e-2, c.learning_rate), "etas": Hyper((0.5, 1.2), _etas),
           "step_sizes": Hyper((1e-6, 50.0), c.pair(c.finite, c.finite,
                                                    "a pair (step_size_min, step_size_max)")),
           "maximize": Hyper(False, c.flag)},
    # torch fills step_size with the group's lr when the state is made
    init={"step_size": lambda h: h["lr"]},
    flags=lambda h: ["maximize"] if h["maximize"] else [],
    fixed=lambda h: {"etaminus": h["etas"][0], "etaplus": h["etas"][1],
                     "step_size_min": h["step_sizes"][0], "step_size_max": h["step_sizes"][1]},
    doc=r"""
    Rprop (Riedmiller & Braun), torch.optim.Rprop's definition.

    .. math::

        f &= \eta^+ \ (g\,g_{t-1} > 0), \quad \eta^- \ (g\,g_{t-1} < 0), \quad
             1 \ \text{(otherwise, NaN included)} \\
        s &\leftarrow \min(\max(s f, s_{\min}), s_{\max}) \\
        g &\leftarrow 0 \ \text{where } f = \eta^- \\
        p &\leftarrow p - \operatorname{sign}(g)\, s, \quad g_{t-1} \leftarrow g
    """, references="Riedmiller & Braun, A direct adaptive method for faster backpropagation "
                    "learning: the RPROP algorithm, IEEE ICNN 1993.")
