"""Hyperparameter checks: each takes (name, value) and returns the clean value.

They raise ``TypeError`` for a value of the wrong kind and ``ValueError``
for one out of range, naming the hyperparameter.  No other adaptopt module
is imported here, so every module can use them.
"""

import math
import numbers

import numpy as np

__all__ = ["real", "nonneg", "unit", "finite", "positive", "flag", "learning_rate", "pair",
           "betas", "whole"]


def real(lo=0.0, hi=None, lo_open=False):
    """A finite real number in [lo, hi) ((lo, hi) with lo_open; hi=None: no bound)."""

    def check(name, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if value < lo or (lo_open and value == lo):
            raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
        if hi is not None and value >= hi:
            raise ValueError(f"{name} must be < {hi}, got {value!r}")
        return value

    return check


nonneg = real(0.0)
unit = real(0.0, 1.0)
finite = real(-math.inf)
positive = real(0.0, lo_open=True)


def flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def whole(name, value):
    """A non-negative int (not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def learning_rate(name, value):
    """A non-negative number, or a schedule: a callable ``lr(step)``."""
    return value if callable(value) else nonneg(name, value)


def pair(first, second, what="a pair"):
    """A 2-sequence whose items pass the two checks; returned as a tuple."""

    def check(name, value):
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be {what}, got {value!r}")
        return (first(f"{name}[0]", value[0]), second(f"{name}[1]", value[1]))

    return check


betas = pair(unit, unit, "a pair (beta1, beta2)")
