"""ASGD: torch.optim.ASGD (torch 2.13, ``_single_tensor_asgd``, capturable=False).

``eta`` and ``mu`` are per-parameter scalar state: torch keeps them as 0-d
float32 tensors (``_get_scalar_dtype()`` under the default dtype), so each
new value is computed in double and rounded to float32 (:func:`advance`);
the state dicts hold them as Python floats.  :func:`update` reads their
values before the step and leaves them; the engine stores :func:`advance`'s.
"""

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec


def update(p, g, state, t, h):
    eta, mu = state["eta"], state["mu"]
    if h["maximize"]:
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    p *= 1 - h["lambd"] * eta
    p += -eta * g
    ax = state["ax"]
    if mu != 1:
        ax += (p - ax) * mu
    else:
        ax[...] = p


def _f32(x):
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def advance(h, t, s):
    """eta and mu after step t, as torch: computed in double, stored in float32."""
    lr, lambd = h["lr"], h["lambd"]
    return {"eta": _f32(lr / ((1 + lambd * lr * t) ** h["alpha"])),
            "mu": _f32(1 / max(1, t - h["t0"]))}


ASGD = Spec(
    "ASGD", kernel="asgd", torch="ASGD", update=update,
    # torch checks none of lambd, alpha, t0
    hyper={"lr": Hyper(1e-2, c.learning_rate), "lambd": Hyper(1e-4, c.finite),
           "alpha": Hyper(0.75, c.finite), "t0": Hyper(1e6, c.finite),
           "weight_decay": Hyper(0.0, c.nonneg), "maximize": Hyper(False, c.flag)},
    scalar_state={"eta": lambda h: _f32(h["lr"]), "mu": lambda h: 1.0},
    advance=advance,
    flags=lambda h: [n for n, on in (("maximize", h["maximize"]),
                                     ("l2", h["weight_decay"] != 0)) if on],
    step_flags=lambda h, t, s: ("average",) if s["mu"] != 1 else (),
    fixed=lambda h: {"weight_decay": h["weight_decay"]},
    per_step=lambda h, t, s: (1 - h["lambd"] * s["eta"], -s["eta"], s["mu"]),
    step_scalars=("decay", "neg_eta", "mu"),
    doc=r"""
    Averaged SGD (Polyak & Juditsky), torch.optim.ASGD's definition.

    .. math::

        g &\leftarrow g + \lambda_w p \quad (\lambda_w \ne 0) \\
        p &\leftarrow p\,(1 - \lambda \eta_t) - \eta_t g \\
        a &\leftarrow a + \mu_t (p - a) \ (\mu_t \ne 1), \quad
        a \leftarrow p \ \text{(otherwise)} \\
        \eta_{t+1} &= \frac{\gamma}{(1 + \lambda \gamma t)^{\alpha}}, \quad
        \mu_{t+1} = \frac{1}{\max(1, t - t_0)}
        \quad \text{(both rounded to float32)}
    """, references="Polyak & Juditsky, Acceleration of stochastic approximation by "
                    "averaging, SIAM J. Control Optim. 30(4), 1992.")
