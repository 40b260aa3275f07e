"""RMSprop: torch.optim.RMSprop (torch 2.13, ``_single_tensor_rmsprop``)."""

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec
from ._common import lerp


def update(p, g, state, t, h):
    alpha, eps, momentum = h["alpha"], h["eps"], h["momentum"]
    if h["maximize"]:
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    sq = state["square_avg"]
    sq *= alpha
    sq += (1 - alpha) * g * g
    if h["centered"]:
        ga = state["grad_avg"]
        ga[...] = lerp(ga, g, 1 - alpha)
        avg = np.sqrt(sq - ga * ga)
    else:
        avg = np.sqrt(sq)
    avg += eps
    if momentum > 0:
        buf = state["momentum_buffer"]
        buf *= momentum
        buf += g / avg
        p += -h["lr"] * buf
    else:
        p += (-h["lr"] * g) / avg


def check(h):
    if h["centered"] and h.get("state_dtype") == "int8":
        raise ValueError("centered=True cannot be used with state_dtype='int8': v - grad_avg**2 "
                         "of two independently quantised buffers can be negative (a NaN "
                         "step); use state_dtype='bfloat16' or 'float32' for centered RMSprop")


RMSPROP = Spec(
    "RMSprop", kernel="rmsprop", torch="RMSprop", update=update, check=check,
    hyper={"lr": Hyper(1e-2, c.learning_rate), "alpha": Hyper(0.99, c.unit),
           "eps": Hyper(1e-8, c.nonneg), "weight_decay": Hyper(0.0, c.nonneg),
           "momentum": Hyper(0.0, c.nonneg), "centered": Hyper(False, c.flag),
           "maximize": Hyper(False, c.flag)},
    buffers=lambda h: (("square_avg",) + (("momentum_buffer",) if h["momentum"] > 0 else ())
                       + (("grad_avg",) if h["centered"] else ())),
    required=lambda h: ("square_avg",),  # momentum and centered may be turned on later
    flags=lambda h: [n for n, on in (("maximize", h["maximize"]), ("l2", h["weight_decay"] != 0),
                                     ("centered", h["centered"]),
                                     ("momentum", h["momentum"] > 0)) if on],
    fixed=lambda h: {"alpha": h["alpha"], "one_minus_alpha": 1 - h["alpha"], "eps": h["eps"],
                     "weight_decay": h["weight_decay"], "momentum": h["momentum"],
                     "neg_lr": -h["lr"]},
    doc=r"""
    RMSprop (Hinton), torch.optim.RMSprop's definition.

    .. math::

        v &\leftarrow \alpha v + (1-\alpha)\, g^2, \quad
        \bar g \leftarrow \mathrm{lerp}(\bar g, g, 1-\alpha) \ \text{(centered)} \\
        a &= \sqrt{v - \bar g^2} + \epsilon \ \text{(centered)}, \quad
        a = \sqrt{v} + \epsilon \ \text{(otherwise)} \\
        b &\leftarrow \mu b + g / a, \quad p \leftarrow p - \eta b \ \text{(momentum)}; \quad
        p \leftarrow p - \eta\, g / a \ \text{(otherwise)}
    """, references="Tieleman & Hinton, Lecture 6.5, COURSERA: Neural Networks for Machine "
                    "Learning, 2012; Graves, Generating Sequences With Recurrent Neural "
                    "Networks, 2013 (centered).")
