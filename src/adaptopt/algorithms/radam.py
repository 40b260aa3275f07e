"""RAdam: torch.optim.RAdam (torch 2.13, ``_single_tensor_radam``).

Whether a step is rectified (rho_t > 5) depends only on beta2 and t: the
kernel takes it as the per-step flag ``rectified`` (``step_flags``), the
scalars of the rectified branch (``rect``, ``bias_correction2_sqrt``) are
unused without it.
"""


import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec
from ._common import lerp


def rectification(h, t):
    """(rho_t > 5, rect) of step t in torch's expressions (double); rect is
    0.0 when the step is not rectified (torch does not compute it then)."""
    b2 = h["betas"][1]
    bias_correction2 = 1 - b2 ** t
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * (b2 ** t) / bias_correction2
    if not rho_t > 5.0:
        return False, 0.0
    return True, ((rho_t - 4) * (rho_t - 2) * rho_inf
                  / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


def update(p, g, state, t, h):
    b1, b2 = h["betas"]
    lr, wd = h["lr"], h["weight_decay"]
    if h["maximize"]:
        g = -g
    if wd != 0:
        if h["decoupled_weight_decay"]:
            p *= 1 - lr * wd
        else:
            g = g + wd * p
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m[...] = lerp(m, g, 1 - b1)
    v *= b2
    v += (1 - b2) * g * g
    x = m / (1 - b1 ** t) * lr
    rectified, rect = rectification(h, t)
    if rectified:
        # torch: bias_correction2**0.5 / (sqrt(v) + eps) is Tensor.__rtruediv__,
        # reciprocal() then a product: two roundings
        adaptive_lr = (1 / (np.sqrt(v) + h["eps"])) * (1 - b2 ** t) ** 0.5
        x = x * adaptive_lr * rect
    p -= x


def flags(h):
    decay = h["weight_decay"] != 0
    return ((["maximize"] if h["maximize"] else [])
            + (["decoupled" if h["decoupled_weight_decay"] else "l2"] if decay else []))


def step_flags(h, t, s):
    return ("rectified",) if rectification(h, t)[0] else ()


def fixed(h):
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    return {"one_minus_beta1": 1 - b1, "beta2": b2, "one_minus_beta2": 1 - b2,
            "decay": 1 - h["lr"] * wd if h["decoupled_weight_decay"] else wd,
            "eps": h["eps"], "lr": h["lr"]}


def per_step(h, t, s):
    b1, b2 = h["betas"]
    return 1 - b1 ** t, (1 - b2 ** t) ** 0.5, rectification(h, t)[1]


RADAM = Spec(
    "RAdam", kernel="radam", torch="RAdam", update=update, flags=flags, fixed=fixed,
    step_flags=step_flags, per_step=per_step,
    step_scalars=("bias_correction1", "bias_correction2_sqrt", "rect"),
    hyper={"lr": Hyper(1e-3, c.learning_rate), "betas": Hyper((0.9, 0.999), c.betas),
           "eps": Hyper(1e-8, c.nonneg), "weight_decay": Hyper(0.0, c.nonneg),
           "decoupled_weight_decay": Hyper(False, c.flag), "maximize": Hyper(False, c.flag)},
    doc=r"""
    RAdam (Liu et al.): Adam with the variance of its adaptive step rectified,
    torch.optim.RAdam's definition.

    .. math::

        m &\leftarrow \mathrm{lerp}(m, g, 1-\beta_1), \quad
        v \leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        \rho_\infty &= \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
        p &\leftarrow p - \eta\, \frac{m}{1-\beta_1^t}\,
              \frac{\sqrt{1-\beta_2^t}}{\sqrt{v}+\epsilon}\, r_t \ \ (\rho_t > 5), \qquad
        p \leftarrow p - \eta\, \frac{m}{1-\beta_1^t} \ \ \text{(otherwise)}

    with :math:`g \leftarrow g + \lambda p` (L2) or :math:`p \leftarrow p(1-\eta\lambda)`
    (``decoupled_weight_decay``) first.
    """, references="Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, "
                    "ICLR 2020.")
