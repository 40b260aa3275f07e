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
"""

import math
import numbers

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
    """Base class: a callable of the step with its settings as plain data."""

    kind = None
    _registry = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Schedule._registry[cls.kind] = cls

    def __call__(self, step):
        return self._lr(_step(step))

    def to_dict(self):
        return {"kind": self.kind, **{k: (v.to_dict() if isinstance(v, Schedule) else v)
                                          for k, v in vars(self).items()}}

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{self.kind}({args})"


class constant(Schedule):
    """lr at every step."""

    kind = "constant"

    def __init__(self, lr):
        self.lr = nonneg("lr", lr)

    def _lr(self, step):
        return self.lr


class step_decay(Schedule):
    """lr * gamma ** ((step - 1) // step_size)  (torch StepLR)."""

    kind = "step_decay"

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = nonneg("lr", lr)
        self.step_size = _count("step_size", step_size)
        self.gamma = nonneg("gamma", gamma)

    def _lr(self, step):
        return self.lr * self.gamma ** ((step - 1) // self.step_size)


class exponential(Schedule):
    """lr * gamma ** (step - 1)  (torch ExponentialLR)."""

    kind = "exponential"

    def __init__(self, lr, gamma):
        self.lr = nonneg("lr", lr)
        self.gamma = nonneg("gamma", gamma)

    def _lr(self, step):
        return self.lr * self.gamma ** (step - 1)


class cosine(Schedule):
    """eta_min + (lr - eta_min) * (1 + cos(pi * (step-1) / T_max)) / 2  (torch CosineAnnealingLR)."""

    kind = "cosine"

    def __init__(self, lr, T_max, eta_min=0.0):
        self.lr = nonneg("lr", lr)
        self.T_max = _count("T_max", T_max)
        self.eta_min = nonneg("eta_min", eta_min)

    def _lr(self, step):
        return self.eta_min + (self.lr - self.eta_min) * (
            1 + math.cos(math.pi * (step - 1) / self.T_max)) / 2


class linear_warmup(Schedule):
    """schedule(step) * factor, factor rising linearly from start_factor to 1
    over warmup_steps steps (torch LinearLR chained with the schedule)."""

    kind = "linear_warmup"

    def __init__(self, schedule, warmup_steps, start_factor=1.0 / 3):
        if not isinstance(schedule, Schedule):
            schedule = constant(schedule)
        self.schedule = schedule
        self.warmup_steps = _count("warmup_steps", warmup_steps)
        self.start_factor = unit("start_factor", start_factor) if start_factor != 1 else 1.0

    def _lr(self, step):
        done = min(step - 1, self.warmup_steps)
        factor = self.start_factor + (1 - self.start_factor) * done / self.warmup_steps
        return self.schedule(step) * factor


def from_dict(d):
    """The schedule a ``to_dict()`` describes."""
    if not isinstance(d, dict) or d.get("kind") not in Schedule._registry:
        raise ValueError(f"not a schedule description: {d!r} (known: {sorted(Schedule._registry)})")
    kw = {k: (from_dict(v) if isinstance(v, dict) else v) for k, v in d.items() if k != "kind"}
    try:
        return Schedule._registry[d["kind"]](**kw)
    except TypeError as e:
        raise ValueError(f"bad schedule description {d!r}: {e}") from None
