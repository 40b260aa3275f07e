"""The executable spec: every optimizer in plain NumPy.

Each class has the signature and behaviour of its fast twin in
``adaptopt.optim`` and an ``_update`` that reads like the math.  The C
kernels reproduce these updates bit for bit, which fixes three things here:

* the operation order is torch.optim's single-tensor order (torch 2.13,
  ``torch/optim/*.py``), one NumPy operation per rounding;
* scalars (bias corrections, step size) are Python floats computed once per
  step; NumPy casts a Python float to the array's dtype before it multiplies
  (NEP 50), and the kernels receive them cast the same way;
* no fused multiply-add anywhere.

The update works on copies of the gradient (``g = -g``, ``g = g + wd * p``)
and writes parameters and state in place.
"""

import math

import numpy as np

from . import _base
from ._base import betas, finite, flag, learning_rate, nonneg, unit

__all__ = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"]


def lerp(start, end, weight):
    """torch.lerp: ``start + w*(end-start)`` for w < 0.5, else ``end - (end-start)*(1-w)``."""
    weight = start.dtype.type(weight)
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


class _Reference(_base.Optimizer):
    def _apply(self, hyper, step, idx, grads):
        # Overflow to inf and NaN are results, as in torch and the kernels: no warnings.
        with np.errstate(all="ignore"):
            for i in idx:
                self._update(self._params[i], grads[i], self.state[i], step, **hyper)


class Adam(_Reference):
    """Adam (Kingma & Ba), torch.optim.Adam's definition.

    m = lerp(m, g, 1-b1);  v = b2*v + (1-b2)*g*g;  (AMSGrad: vmax = max(vmax, v))
    p = p - (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
    """

    _decoupled = False
    _hyper = {"lr": learning_rate, "betas": betas, "eps": nonneg,
              "weight_decay": nonneg, "amsgrad": flag, "maximize": flag}
    _all_buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, amsgrad=False, maximize=False, n_threads=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize), n_threads)

    def _buffers(self, hyper):
        return self._all_buffers if hyper["amsgrad"] else self._all_buffers[:2]

    def _update(self, p, g, state, step, lr, betas, eps, weight_decay, amsgrad, maximize):
        b1, b2 = betas
        if maximize:
            g = -g
        if weight_decay != 0:
            if self._decoupled:
                p *= 1 - lr * weight_decay            # AdamW: decay p itself
            else:
                g = g + weight_decay * p              # Adam: L2 term in the gradient
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m[...] = lerp(m, g, 1 - b1)
        v *= b2
        v += (1 - b2) * g * g
        if amsgrad:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        step_size = lr / (1 - b1 ** step)
        bias_correction2_sqrt = math.sqrt(1 - b2 ** step)
        denom = np.sqrt(v) / bias_correction2_sqrt + eps
        p += (-step_size * m) / denom


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): Adam with decoupled decay ``p *= 1 - lr*wd``."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=1e-2, amsgrad=False, maximize=False, n_threads=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, n_threads)


class Adagrad(_Reference):
    """Adagrad (Duchi et al.), torch.optim.Adagrad's definition.

    s = s + g*g;  p = p - (lr/(1+(t-1)*lr_decay)) * g / (sqrt(s) + eps)
    """

    _hyper = {"lr": learning_rate, "lr_decay": nonneg, "weight_decay": nonneg,
              "initial_accumulator_value": nonneg, "eps": nonneg, "maximize": flag}
    _all_buffers = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, maximize=False, n_threads=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize), n_threads)
        # torch creates Adagrad's state in the constructor
        for gi, group in enumerate(self.param_groups):
            for i in self._group_indices(gi):
                self._ensure_state(i, group)

    def _group_indices(self, gi):
        start = sum(len(g["params"]) for g in self.param_groups[:gi])
        return range(start, start + len(self.param_groups[gi]["params"]))

    def _buffers(self, hyper):
        return self._all_buffers

    def _init_buffer(self, name, p, hyper):
        return np.full_like(p, hyper["initial_accumulator_value"])

    def _update(self, p, g, state, step, lr, lr_decay, weight_decay,
                initial_accumulator_value, eps, maximize):
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        s = state["sum"]
        s += g * g
        std = np.sqrt(s) + eps
        p += (-clr * g) / std


class RMSprop(_Reference):
    """RMSprop (Hinton), torch.optim.RMSprop's definition.

    sq = alpha*sq + (1-alpha)*g*g;  centered: ga = lerp(ga, g, 1-alpha), avg = sqrt(sq - ga*ga)
    else avg = sqrt(sq);  avg += eps
    momentum: buf = momentum*buf + g/avg, p = p - lr*buf;  else p = p - lr*g/avg
    """

    _hyper = {"lr": learning_rate, "alpha": unit, "eps": nonneg, "weight_decay": nonneg,
              "momentum": nonneg, "centered": flag, "maximize": flag}
    _all_buffers = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, maximize=False, n_threads=None):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      maximize=maximize), n_threads)

    def _buffers(self, hyper):
        return ("square_avg",) + (("momentum_buffer",) if hyper["momentum"] > 0 else ()) + (
            ("grad_avg",) if hyper["centered"] else ())

    def _update(self, p, g, state, step, lr, alpha, eps, weight_decay, momentum,
                centered, maximize):
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        sq = state["square_avg"]
        sq *= alpha
        sq += (1 - alpha) * g * g
        if centered:
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
            p += -lr * buf
        else:
            p += (-lr * g) / avg


class SGD(_Reference):
    """SGD with momentum (torch.optim.SGD's definition).

    buf = g on the first step, then buf = momentum*buf + (1-dampening)*g;
    nesterov: d = g + momentum*buf, else d = buf;  p = p - lr*d
    """

    _hyper = {"lr": learning_rate, "momentum": nonneg, "dampening": finite,
              "weight_decay": nonneg, "nesterov": flag, "maximize": flag}
    _all_buffers = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False, n_threads=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize), n_threads)

    def _check_group(self, group):
        hyper = super()._check_group(group)
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening = 0, got "
                             f"momentum={hyper['momentum']!r}, dampening={hyper['dampening']!r}")
        return hyper

    def _buffers(self, hyper):
        return ()  # the momentum buffer is the first step's gradient, made in _update

    def _required(self, hyper):
        return ()  # as in torch, a missing buffer is made from the next gradient

    def _update(self, p, g, state, step, lr, momentum, dampening, weight_decay,
                nesterov, maximize):
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
                self._changed()
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p += -lr * g
