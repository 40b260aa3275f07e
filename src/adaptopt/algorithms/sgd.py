"""SGD with momentum: torch.optim.SGD (torch 2.13, ``_single_tensor_sgd``)."""

from .. import _base
from .. import _checks as c
from .._spec import Hyper, Spec


def update(p, g, state, t, h):
    momentum = h["momentum"]
    if h["maximize"]:
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * p
    if momentum != 0:
        buf = state.get("momentum_buffer")
        if buf is None:                          # the first step: buf = g
            buf = state["momentum_buffer"] = _base.like(p, g)  # in p's layout
        else:
            buf *= momentum
            buf += (1 - h["dampening"]) * g
        g = g + momentum * buf if h["nesterov"] else buf
    p += -h["lr"] * g


def check(h):
    if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
        raise ValueError("nesterov requires momentum > 0 and dampening = 0, got "
                         f"momentum={h['momentum']!r}, dampening={h['dampening']!r}")


SGD = Spec(
    "SGD", kernel="sgd", torch="SGD", update=update, check=check,
    hyper={"lr": Hyper(1e-3, c.learning_rate), "momentum": Hyper(0.0, c.nonneg),
           "dampening": Hyper(0.0, c.finite), "weight_decay": Hyper(0.0, c.nonneg),
           "nesterov": Hyper(False, c.flag), "maximize": Hyper(False, c.flag)},
    buffers=lambda h: ("momentum_buffer",) if h["momentum"] != 0 else (),
    required=lambda h: (),        # as in torch, a missing buffer is made from the next gradient
    init={"momentum_buffer": "grad"}, first_flag="first",
    flags=lambda h: [n for n, on in (("maximize", h["maximize"]), ("l2", h["weight_decay"] != 0),
                                     ("momentum", h["momentum"] != 0),
                                     ("nesterov", h["nesterov"])) if on],
    fixed=lambda h: {"weight_decay": h["weight_decay"], "momentum": h["momentum"],
                     "one_minus_dampening": 1 - h["dampening"], "neg_lr": -h["lr"]},
    doc=r"""
    SGD with momentum, torch.optim.SGD's definition.

    .. math::

        b &\leftarrow g \ \text{(first step)}, \quad
        b \leftarrow \mu b + (1-\tau)\, g \ \text{(later)} \\
        d &= g + \mu b \ \text{(Nesterov)}, \quad d = b \ \text{(momentum)}, \quad
        d = g \ \text{(plain)} \\
        p &\leftarrow p - \eta d
    """, references="Sutskever et al., On the importance of initialization and momentum in "
                    "deep learning, ICML 2013.")
