"""Learning-rate schedules: callables ``lr(step) -> float``, step from 1.

Pass one as ``lr=`` to any optimizer (or put it in a param group).  Values
are the closed forms of torch.optim.lr_scheduler with the same settings,
where torch's ``last_epoch`` is ``step - 1`` (torch's schedulers are
stepped after the optimizer, so its first step uses ``last_epoch = 0``)::

    constant(lr)                            ConstantLR with factor 1
    step_decay(lr, step_size, gamma=0.1)    StepLR
    exponential(lr, gamma)                  ExponentialLR
    cosine(lr, T_max, eta_min=0.0)          CosineAnnealingLR
    linear_warmup(schedule, warmup_steps, start_factor=1/3)
                                            LinearLR (to factor 1) times schedule

Schedules are plain data (``to_dict`` / ``from_dict``), so checkpoints that
hold them need no pickle.

>>> from adaptopt import schedules
>>> lr = schedules.linear_warmup(schedules.cosine(0.1, T_max=100), warmup_steps=10)
>>> [round(lr(t), 4) for t in (1, 6, 11, 101)]
[0.0333, 0.0663, 0.0976, 0.0]
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from ._checks import nonneg, unit

__all__ = ["Schedule", "constant", "step_decay", "exponential", "cosine", "linear_warmup",
           "from_dict"]


def _count(name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _step(step):
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    return int(step)


class Schedule:
    """Base class of the schedules: a callable of the step, its settings plain data.

    Subclasses set ``kind`` (their name in :meth:`to_dict`) and define
    ``_lr(step)``; defining one registers it with :func:`from_dict`.

    See Also
    --------
    constant, step_decay, exponential, cosine, linear_warmup, from_dict
    """

    kind: str | None = None
    _registry: dict[str | None, type[Schedule]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Schedule._registry[cls.kind] = cls

    def __call__(self, step: int) -> float:
        """The learning rate at ``step``.

        Parameters
        ----------
        step : int
            The optimizer's step count, from 1.

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If ``step`` is not an integer >= 1.
        """
        return self._lr(_step(step))

    def _lr(self, step: int) -> float:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The schedule as plain data: ``{"kind": ..., setting: value, ...}``.

        Returns
        -------
        dict
            JSON-serialisable; :func:`from_dict` makes the schedule again.

        Examples
        --------
        >>> from adaptopt import schedules
        >>> schedules.step_decay(0.1, step_size=30).to_dict()
        {'kind': 'step_decay', 'lr': 0.1, 'step_size': 30, 'gamma': 0.1}
        """
        return {"kind": self.kind, **{k: (v.to_dict() if isinstance(v, Schedule) else v)
                                          for k, v in vars(self).items()}}

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{self.kind}({args})"


class constant(Schedule):
    """The same learning rate at every step (torch's ``ConstantLR`` with factor 1).

    Parameters
    ----------
    lr : float
        The learning rate, >= 0.

    Raises
    ------
    ValueError, TypeError
        If ``lr`` is negative, not finite, or not a real number.

    Examples
    --------
    >>> from adaptopt import schedules
    >>> schedules.constant(0.01)(1000)
    0.01
    """

    kind = "constant"

    def __init__(self, lr: float):
        self.lr = nonneg("lr", lr)

    def _lr(self, step):
        return self.lr


class step_decay(Schedule):
    """``lr * gamma ** ((step - 1) // step_size)``: torch's ``StepLR``.

    Parameters
    ----------
    lr : float
        The initial learning rate, >= 0.
    step_size : int
        Steps between decays, >= 1.
    gamma : float, default 0.1
        The factor of each decay, >= 0.

    Raises
    ------
    ValueError, TypeError
        If a setting is out of range or of the wrong type.

    See Also
    --------
    exponential : a decay at every step.

    Examples
    --------
    >>> from adaptopt import schedules
    >>> lr = schedules.step_decay(1.0, step_size=2, gamma=0.5)
    >>> [lr(t) for t in range(1, 6)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    kind = "step_decay"

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        self.lr = nonneg("lr", lr)
        self.step_size = _count("step_size", step_size)
        self.gamma = nonneg("gamma", gamma)

    def _lr(self, step):
        return self.lr * self.gamma ** ((step - 1) // self.step_size)


class exponential(Schedule):
    """``lr * gamma ** (step - 1)``: torch's ``ExponentialLR``.

    Parameters
    ----------
    lr : float
        The initial learning rate, >= 0.
    gamma : float
        The factor per step, >= 0.

    Raises
    ------
    ValueError, TypeError
        If a setting is out of range or of the wrong type.

    See Also
    --------
    step_decay

    Examples
    --------
    >>> from adaptopt import schedules
    >>> lr = schedules.exponential(1.0, gamma=0.5)
    >>> [lr(t) for t in range(1, 5)]
    [1.0, 0.5, 0.25, 0.125]
    """

    kind = "exponential"

    def __init__(self, lr: float, gamma: float):
        self.lr = nonneg("lr", lr)
        self.gamma = nonneg("gamma", gamma)

    def _lr(self, step):
        return self.lr * self.gamma ** (step - 1)


class cosine(Schedule):
    """Cosine annealing from ``lr`` to ``eta_min``: torch's ``CosineAnnealingLR``.

    ``eta_min + (lr - eta_min) * (1 + cos(pi * (step - 1) / T_max)) / 2``;
    past ``T_max`` it rises again, as torch's closed form does.

    Parameters
    ----------
    lr : float
        The learning rate at step 1, >= 0.
    T_max : int
        Steps from ``lr`` to ``eta_min``, >= 1.
    eta_min : float, default 0.0
        The smallest learning rate, >= 0.

    Raises
    ------
    ValueError, TypeError
        If a setting is out of range or of the wrong type.

    See Also
    --------
    linear_warmup : a warm-up in front of it.

    Examples
    --------
    >>> from adaptopt import schedules
    >>> lr = schedules.cosine(1.0, T_max=4)
    >>> [round(lr(t), 4) for t in range(1, 6)]
    [1.0, 0.8536, 0.5, 0.1464, 0.0]
    """

    kind = "cosine"

    def __init__(self, lr: float, T_max: int, eta_min: float = 0.0):
        self.lr = nonneg("lr", lr)
        self.T_max = _count("T_max", T_max)
        self.eta_min = nonneg("eta_min", eta_min)

    def _lr(self, step):
        return self.eta_min + (self.lr - self.eta_min) * (
            1 + math.cos(math.pi * (step - 1) / self.T_max)) / 2


class linear_warmup(Schedule):
    """A linear warm-up in front of another schedule: torch's ``LinearLR``, chained.

    ``schedule(step) * factor``, the factor rising linearly from
    ``start_factor`` at step 1 to 1 at step ``warmup_steps + 1`` and staying
    1 after.

    Parameters
    ----------
    schedule : Schedule or float
        The schedule warmed up; a number means :class:`constant`.
    warmup_steps : int
        Steps of the warm-up, >= 1 (torch's ``total_iters``).
    start_factor : float, default 1/3
        The factor at step 1, in (0, 1] (torch's default).

    Raises
    ------
    ValueError, TypeError
        If a setting is out of range or of the wrong type.

    Examples
    --------
    >>> from adaptopt import schedules
    >>> lr = schedules.linear_warmup(1.0, warmup_steps=2, start_factor=0.5)
    >>> [lr(t) for t in range(1, 5)]
    [0.5, 0.75, 1.0, 1.0]
    """

    kind = "linear_warmup"

    def __init__(self, schedule: Schedule | float, warmup_steps: int,
                 start_factor: float = 1.0 / 3):
        if not isinstance(schedule, Schedule):
            schedule = constant(schedule)
        self.schedule = schedule
        self.warmup_steps = _count("warmup_steps", warmup_steps)
        self.start_factor = unit("start_factor", start_factor) if start_factor != 1 else 1.0

    def _lr(self, step):
        done = min(step - 1, self.warmup_steps)
        factor = self.start_factor + (1 - self.start_factor) * done / self.warmup_steps
        return self.schedule(step) * factor


def from_dict(d: dict[str, Any]) -> Schedule:
    """The schedule a :meth:`Schedule.to_dict` describes.

    Parameters
    ----------
    d : dict
        ``{"kind": name, setting: value, ...}``; nested schedules as dicts.

    Returns
    -------
    Schedule

    Raises
    ------
    ValueError
        If ``d`` does not describe a schedule.

    Examples
    --------
    >>> from adaptopt import schedules
    >>> s = schedules.linear_warmup(schedules.cosine(0.1, T_max=50), warmup_steps=5)
    >>> schedules.from_dict(s.to_dict()) == s
    True
    """
    if not isinstance(d, dict) or d.get("kind") not in Schedule._registry:
        raise ValueError(f"not a schedule description: {d!r} (known: {sorted(Schedule._registry)})")
    kw = {k: (from_dict(v) if isinstance(v, dict) else v) for k, v in d.items() if k != "kind"}
    try:
        return Schedule._registry[d["kind"]](**kw)
    except TypeError as e:
        raise ValueError(f"bad schedule description {d!r}: {e}") from None
