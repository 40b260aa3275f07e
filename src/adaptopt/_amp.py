"""Loss scaling and global-norm clipping fused into the step (AMP).

``opt.step(grads, grad_scale=s, max_grad_norm=c)`` is, by definition, the
NumPy below (the reference classes run it literally; the fast ones in one
reduction pass over the gradients and one update pass):

1. ``S = sumsq(grads)``: the sum of the squares of every element of every
   gradient of the step, in float64, in a fixed order (:func:`sumsq`).
2. ``norm = sqrt(S) / s`` (``sqrt(S)`` without ``grad_scale``), in float64:
   the global 2-norm of the unscaled gradients.  When it is not finite (a
   gradient holds an inf or a NaN, or the sum overflows), the step is
   skipped: parameters, state and step counts stay as they were.
3. ``coef = c / (norm + 1e-6)`` (torch.nn.utils.clip_grad_norm_'s
   definition), used only when it is < 1.
4. The update of each parameter with ``g = g / s`` (torch's fused
   optimizers' unscale: a division) and then ``g = g * coef``, each in the
   gradient's dtype with the scalar cast to it first (NumPy's rule for a
   Python float), instead of ``g``.  The caller's gradients are not written.
"""

import math
import numbers
from typing import NamedTuple

import numpy as np

from . import _kernels

__all__ = ["StepResult", "sumsq", "check_scale", "check_max_norm", "scalars", "unscaled",
           "CLIP_EPS", "BLOCK", "LANES"]

BLOCK = _kernels.GRADNORM_BLOCK   # elements per block, cut from each array's start
LANES = 16                        # accumulators of a block's sum
CLIP_EPS = 1e-6                   # torch.nn.utils.clip_grad_norm_'s


class StepResult(NamedTuple):
    """What ``opt.step(grads, grad_scale=..., max_grad_norm=...)`` returns.

    Attributes
    ----------
    norm : float
        The global 2-norm of the unscaled gradients, ``sqrt(S) / grad_scale``
        with ``S`` their sum of squares in float64 (inf or NaN when a
        gradient is not finite), before clipping.
    stepped : bool
        Whether the step was taken: False when ``norm`` is not finite, and
        then nothing changed.
    """

    norm: float
    stepped: bool


def sumsq(grads):
    """The sum of squares of every element of ``grads``, in float64, in the
    kernel's order: the reference of ``csrc/gradnorm.c``.

    Each array (in order) is cut into blocks of ``BLOCK`` elements from its
    start; in a block, ``LANES`` accumulators from +0 where lane k adds
    ``x[k]**2, x[k+16]**2, ...`` left to right (``np.cumsum`` is sequential),
    folded as ``a[k] += a[k+8]``, ``+4``, ``+2``, ``+1``; the block sums are
    added left to right.  Squares of float32 (and 16-bit) values are exact in
    float64.  The zeros padding the last block leave every lane unchanged.
    """
    parts = []
    for g in grads:
        x = np.asarray(g, dtype=np.float64).ravel()
        nb = -(-x.size // BLOCK)
        if nb == 0:
            continue
        x = np.concatenate([x, np.zeros(nb * BLOCK - x.size)]).reshape(nb, BLOCK // LANES, LANES)
        with np.errstate(all="ignore"):
            lanes = np.cumsum(x * x, axis=1)[:, -1, :]
            h = LANES // 2
            while h >= 1:
                lanes[:, :h] = lanes[:, :h] + lanes[:, h:2 * h]
                h //= 2
        parts.append(lanes[:, 0])
    if not parts:
        return 0.0
    return float(np.cumsum(np.concatenate(parts))[-1])


def _real(name, value):
    v = value.item() if isinstance(value, (np.ndarray, np.generic)) and value.size == 1 else value
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be None or a real number, got {value!r}")
    return float(v)


def check_scale(value):
    """grad_scale: None, or a finite number > 0 (a 1-element array accepted)."""
    if value is None:
        return None
    v = _real("grad_scale", value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"grad_scale must be a finite number > 0 (the loss scale the "
                         f"gradients were multiplied by), got {v!r}")
    return v


def check_max_norm(value):
    """max_grad_norm: None, or a number > 0 (inf: no clipping)."""
    if value is None:
        return None
    v = _real("max_grad_norm", value)
    if not v > 0:
        raise ValueError(f"max_grad_norm must be > 0, got {v!r}")
    return v


def scalars(s, scale, max_norm):
    """(norm, stepped, div, mul) from the sum of squares s: the norm of the
    unscaled gradients, whether the step is taken, and the scalars the
    update applies (div 0: no division, mul 1: no multiplication)."""
    norm = math.sqrt(s) if s == s else s
    if scale is not None:
        norm = norm / scale
    if not math.isfinite(norm):
        return norm, False, 0.0, 1.0
    mul = 1.0
    if max_norm is not None:
        coef = max_norm / (norm + CLIP_EPS)
        if coef < 1.0:
            mul = coef
    return norm, True, (0.0 if scale is None else scale), mul


def unscaled(g, div, mul):
    """The gradient the update uses: ``g / div`` (div 0: g), then ``* mul``
    (mul 1: unchanged), in g's dtype with each scalar cast to it first; a
    new array, g is not written."""
    t = g.dtype.type
    out = g
    if div:
        out = out / t(div)
    if mul != 1.0:
        out = out * t(mul)
    return out
