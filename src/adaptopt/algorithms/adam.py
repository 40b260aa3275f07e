"""Adam, AdamW and AMSGrad: torch.optim.Adam / AdamW (torch 2.13, ``_single_tensor_adam``)."""

import math

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec
from ._common import lerp


def update(p, g, state, t, h):
    b1, b2 = h["betas"]
    lr, wd = h["lr"], h["weight_decay"]
    if h["maximize"]:
        g = -g
    if wd != 0:
        if h["decoupled_weight_decay"]:
            p *= 1 - lr * wd                      # AdamW: decay p itself
        else:
            g = g + wd * p                        # Adam: L2 term in the gradient
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m[...] = lerp(m, g, 1 - b1)
    v *= b2
    v += (1 - b2) * g * g
    if h["amsgrad"]:
        np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        v = state["max_exp_avg_sq"]
    step_size = lr / (1 - b1 ** t)
    bias_correction2_sqrt = math.sqrt(1 - b2 ** t)
    denom = np.sqrt(v) / bias_correction2_sqrt + h["eps"]
    p += (-step_size * m) / denom


def buffers(h):
    return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if h["amsgrad"] else ())


def flags(h):
    decay = h["weight_decay"] != 0
    return ([n for n, on in (("maximize", h["maximize"]), ("amsgrad", h["amsgrad"])) if on]
            + (["decoupled" if h["decoupled_weight_decay"] else "l2"] if decay else []))


def fixed(h):
    b1, b2 = h["betas"]
    wd = h["weight_decay"]
    return {"one_minus_beta1": 1 - b1, "beta2": b2, "one_minus_beta2": 1 - b2,
            "decay": 1 - h["lr"] * wd if h["decoupled_weight_decay"] else wd, "eps": h["eps"]}


def per_step(h, t, s):
    b1, b2 = h["betas"]
    return math.sqrt(1 - b2 ** t), -(h["lr"] / (1 - b1 ** t))


def _hyper(weight_decay, decoupled):
    return {"lr": Hyper(1e-3, c.learning_rate), "betas": Hyper((0.9, 0.999), c.betas),
            "eps": Hyper(1e-8, c.nonneg), "weight_decay": Hyper(weight_decay, c.nonneg),
            "amsgrad": Hyper(False, c.flag), "maximize": Hyper(False, c.flag),
            "decoupled_weight_decay": Hyper(decoupled, c.flag, public=not decoupled)}


_common = dict(kernel="adam", update=update, flags=flags, fixed=fixed, per_step=per_step,
               step_scalars=("bias_correction2_sqrt", "neg_step_size"), buffers=buffers,
               required=lambda h: ("exp_avg", "exp_avg_sq"))  # amsgrad may be turned on later

ADAM = Spec("Adam", hyper=_hyper(0.0, False), torch="Adam", **_common, doc=r"""
    Adam (Kingma & Ba), torch.optim.Adam's definition.

    .. math::

        g &\leftarrow g + \lambda p \quad (\lambda \ne 0) \\
        m &\leftarrow \mathrm{lerp}(m, g, 1-\beta_1) \\
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        \hat v &= \max(\hat v, v) \ \text{(AMSGrad)} \\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\,
             \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}
    """, references="Kingma & Ba, Adam: A Method for Stochastic Optimization, ICLR 2015; "
                    "Reddi et al., On the Convergence of Adam and Beyond (AMSGrad), ICLR 2018.")

ADAMW = Spec("AdamW", hyper=_hyper(1e-2, True), torch="AdamW", **_common, doc=r"""
    AdamW (Loshchilov & Hutter): Adam with decoupled weight decay.

    .. math::

        p &\leftarrow p\,(1 - \eta\lambda) \\
        m &\leftarrow \mathrm{lerp}(m, g, 1-\beta_1), \quad
        v \leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\,
             \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}
    """, references="Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019.")
