"""NAdam: torch.optim.NAdam (torch 2.13, ``_single_tensor_nadam``).

Besides its buffers, NAdam keeps one scalar per parameter, ``mu_product``
(the product of the momentum schedule mu_1 ... mu_t).  torch keeps it in a
0-d tensor of ``_get_scalar_dtype()`` (float32 unless torch's default dtype
is float64), so ``mu_product *= mu`` rounds to float32 every step; the
coefficients are then computed in double from that float32 value.  Here it
is a Python float holding the float32 value (:data:`MU_PRODUCT_DTYPE`); a
front end that follows torch under ``torch.set_default_dtype(torch.float64)``
passes ``mu_product_dtype=np.float64`` to ``update``, ``per_step`` and
``advance``.

The reference step reads ``state["mu_product"]`` (the value before step t)
and does not write it: whoever steps stores ``advance(h, t, s)`` afterwards,
for the reference and the kernel alike.
"""


import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec
from ._common import lerp

MU_PRODUCT_DTYPE = np.float32
"""torch's ``_get_scalar_dtype()`` under its default dtype (float32)."""


def mu(h, t):
    """The momentum schedule mu_t, in torch's expression (double)."""
    return h["betas"][0] * (1.0 - 0.5 * (0.96 ** (t * h["momentum_decay"])))


def mu_product_after(s, mu_t, dtype=MU_PRODUCT_DTYPE):
    """torch's ``mu_product *= mu`` on a 0-d tensor of dtype: mu cast to
    dtype, one product rounded to dtype."""
    return float(dtype(dtype(s) * dtype(mu_t)))


def coefficients(h, t, mu_product, mu_product_dtype=MU_PRODUCT_DTYPE):
    """(grad_coef, exp_avg_coef) of step t from mu_product before it, as torch
    computes them in Python floats."""
    lr = h["lr"]
    mu_t, mu_next = mu(h, t), mu(h, t + 1)
    prod = mu_product_after(mu_product, mu_t, mu_product_dtype)
    prod_next = prod * mu_next                     # not rounded to float32 in torch
    return (-lr * (1.0 - mu_t) / (1.0 - prod), (-lr * mu_next) / (1.0 - prod_next))


def update(p, g, state, t, h, mu_product_dtype=MU_PRODUCT_DTYPE):
    b1, b2 = h["betas"]
    lr, wd = h["lr"], h["weight_decay"]
    if h["maximize"]:
        g = -g
    if wd != 0:
        if h["decoupled_weight_decay"]:
            p *= 1 - lr * wd
        else:
            g = g + wd * p
    grad_coef, exp_avg_coef = coefficients(h, t, state["mu_product"], mu_product_dtype)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m[...] = lerp(m, g, 1 - b1)
    v *= b2
    v += (1 - b2) * g * g
    denom = np.sqrt(v / (1 - b2 ** t)) + h["eps"]
    p += (grad_coef * g) / denom
    p += (exp_avg_coef * m) / denom


def flags(h):
    decay = h["weight_decay"] != 0
    return ((["maximize"] if h["maximize"] else [])
            + (["decoupled" if h["decoupled_weight_decay"] else "l2"] if decay else []))


def fixed(h):
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    return {"one_minus_beta1": 1 - b1, "beta2": b2, "one_minus_beta2": 1 - b2,
            "decay": 1 - h["lr"] * wd if h["decoupled_weight_decay"] else wd, "eps": h["eps"]}


def per_step(h, t, s, mu_product_dtype=MU_PRODUCT_DTYPE):
    return (1 - h["betas"][1] ** t,) + coefficients(h, t, s["mu_product"], mu_product_dtype)


def advance(h, t, s, mu_product_dtype=MU_PRODUCT_DTYPE):
    return {"mu_product": mu_product_after(s["mu_product"], mu(h, t), mu_product_dtype)}


NADAM = Spec(
    "NAdam", kernel="nadam", torch="NAdam", update=update, flags=flags, fixed=fixed,
    per_step=per_step, step_scalars=("bias_correction2", "grad_coef", "exp_avg_coef"),
    scalar_state={"mu_product": lambda h: 1.0}, advance=advance,
    hyper={"lr": Hyper(2e-3, c.learning_rate), "betas": Hyper((0.9, 0.999), c.betas),
           "eps": Hyper(1e-8, c.nonneg), "weight_decay": Hyper(0.0, c.nonneg),
           "momentum_decay": Hyper(4e-3, c.nonneg),
           "decoupled_weight_decay": Hyper(False, c.flag), "maximize": Hyper(False, c.flag)},
    doc=r"""
    NAdam (Dozat): Adam with Nesterov momentum, torch.optim.NAdam's definition.

    .. math::

        \mu_t &= \beta_1 \left(1 - \tfrac12\, 0.96^{t\psi}\right), \quad
        \Pi_t = \Pi_{t-1} \mu_t \ \text{(rounded to float32, as torch)} \\
        m &\leftarrow \mathrm{lerp}(m, g, 1-\beta_1), \quad
        v \leftarrow \beta_2 v + (1-\beta_2)\, g^2, \quad
        d = \sqrt{v / (1-\beta_2^t)} + \epsilon \\
        p &\leftarrow p - \eta\,\frac{1-\mu_t}{1-\Pi_t}\,\frac{g}{d}
                        - \eta\,\frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\,\frac{m}{d}

    with :math:`g \leftarrow g + \lambda p` (L2) or :math:`p \leftarrow p(1-\eta\lambda)`
    (``decoupled_weight_decay``) first, and :math:`\psi` the ``momentum_decay``.
    """, references="Dozat, Incorporating Nesterov Momentum into Adam, ICLR 2016 workshop; "
                    "Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019.")
