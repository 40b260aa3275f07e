"""Lion (Chen et al. 2023), in lion-pytorch's operation order.

torch 2.13 has no Lion.  The peers: ``lion_pytorch.Lion`` (update_fn: decay,
``exp_avg*beta1 + (1-beta1)*g``, sign, step, then the moment) and
DeepSpeed's ``DeepSpeedCPULion`` (same terms).  Where they differ from here:

* sign(NaN): torch.sgn gives 0 (the element silently stops moving),
  DeepSpeed's copysign gives +-1; here NaN propagates (np.sign), as it does
  through every other algorithm.
* sign(+-0) is 0 here and in lion-pytorch; DeepSpeed's copysign gives +-1.
* lion-pytorch's ``add(alpha=)`` is fused (FMA) in torch's vectorised CPU
  loop and not in its tail (see shared NUMERICS notes), so c and the
  moment there can differ from these two-rounding forms by 1 ULP.
* ``maximize`` is ours (neither peer has it): the gradient is negated first.
"""

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec


def update(p, g, state, t, h):
    b1, b2 = h["betas"]
    lr, wd = h["lr"], h["weight_decay"]
    if h["maximize"]:
        g = -g
    if wd != 0:
        p *= 1 - lr * wd
    m = state["exp_avg"]
    c = m * b1
    c += (1 - b1) * g
    p += -lr * np.sign(c)
    m *= b2
    m += (1 - b2) * g


def _beta(name, value):
    """A beta in [0, 1], as lion-pytorch accepts."""
    value = c.nonneg(name, value)
    if value > 1:
        raise ValueError(f"{name} must be <= 1, got {value!r}")
    return value


LION = Spec(
    "Lion", kernel="lion", torch=None, update=update,
    hyper={"lr": Hyper(1e-4, c.learning_rate),
           "betas": Hyper((0.9, 0.99), c.pair(_beta, _beta, "a pair (beta1, beta2)")),
           "weight_decay": Hyper(0.0, c.nonneg), "maximize": Hyper(False, c.flag)},
    flags=lambda h: [n for n, on in (("maximize", h["maximize"]),
                                     ("decay", h["weight_decay"] != 0)) if on],
    fixed=lambda h: {"beta1": h["betas"][0], "one_minus_beta1": 1 - h["betas"][0],
                     "beta2": h["betas"][1], "one_minus_beta2": 1 - h["betas"][1],
                     "decay": 1 - h["lr"] * h["weight_decay"], "neg_lr": -h["lr"]},
    doc=r"""
    Lion (Chen et al.): the sign of an interpolated momentum, with decoupled
    weight decay; lion-pytorch's operation order.

    .. math::

        p &\leftarrow p\,(1 - \eta\lambda) \\
        c &= \beta_1 m + (1-\beta_1)\, g, \quad
        p \leftarrow p - \eta\, \mathrm{sign}(c) \\
        m &\leftarrow \beta_2 m + (1-\beta_2)\, g

    with :math:`\mathrm{sign}(0) = 0` and :math:`\mathrm{sign}(\mathrm{NaN}) = \mathrm{NaN}`.
    """, references="Chen et al., Symbolic Discovery of Optimization Algorithms, NeurIPS 2023 "
                    "(arXiv:2302.06675).")
