"""What the fast optimizers and their NumPy reference twins share.

Param groups, hyperparameter and gradient validation, per-parameter state,
``state_dict``.  Subclasses supply the algorithm: ``_hyper`` (the checks of
each hyperparameter), ``_buffers(group)`` (the state buffers, in kernel
order), ``_init_buffer`` and ``_apply`` (the update of one batch of arrays).

Everything a call can reject is checked before anything is changed, so a
failing call leaves parameters, state and gradients exactly as they were.
"""

import bisect
import copy
import math
import numbers
import threading

import numpy as np

from ._config import resolve_threads

__all__ = ["Optimizer"]

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --- hyperparameter checks: each takes (name, value), returns the clean value
def _real(lo=0.0, hi=None):
    """A finite real number in [lo, hi) (hi=None: no upper bound)."""

    def check(name, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if value < lo:
            raise ValueError(f"{name} must be >= {lo}, got {value!r}")
        if hi is not None and value >= hi:
            raise ValueError(f"{name} must be < {hi}, got {value!r}")
        return value

    return check


nonneg = _real(0.0)
unit = _real(0.0, 1.0)
finite = _real(-math.inf)


def flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def learning_rate(name, value):
    """A non-negative number, or a schedule: a callable ``lr(step)``."""
    return value if callable(value) else nonneg(name, value)


def betas(name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {value!r}")
    return (unit(f"{name}[0]", value[0]), unit(f"{name}[1]", value[1]))


def _describe(a):
    return f"{type(a).__name__}" if not isinstance(a, np.ndarray) else (
        f"array of dtype {a.dtype} and shape {a.shape}")


def check_param(name, p):
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {_describe(p)}")
    if p.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has unsupported dtype {p.dtype}: adaptopt "
                        "updates native-endian float32 and float64 arrays")
    if not p.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (no silent copy is made); "
                         "use np.ascontiguousarray and pass the copy")
    if not p.flags.aligned:
        raise ValueError(f"{name} is not aligned to its dtype's size (e.g. a view at an odd "
                         "byte offset); pass an aligned copy")
    if not p.flags.writeable:
        raise ValueError(f"{name} is read-only: parameters are updated in place")
    return p


class ParamGroup(dict):
    """A param group: a dict that counts its changes.

    The optimizer re-checks a group's hyperparameters when its version
    moved, so an unchanged group costs nothing per step while a change made
    between steps (``group["lr"] = ...``) is checked at the next one."""

    __slots__ = ("version",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.version = 0

    def _touch(name):
        method = getattr(dict, name)

        def changed(self, *args, **kwargs):
            self.version += 1
            return method(self, *args, **kwargs)

        changed.__name__ = name
        return changed

    for _name in ("__setitem__", "__delitem__", "__ior__", "update", "setdefault", "pop",
                  "popitem", "clear"):
        locals()[_name] = _touch(_name)
    del _name, _touch

    def __reduce__(self):
        return (ParamGroup, (dict(self),))


STAGGER_MIN_BYTES = 32 << 20
STAGGER_BYTES = (256 << 10) + 192


def staggered_copy(buf, k):
    """buf, or for a large buffer a copy placed k * STAGGER_BYTES into its
    allocation.

    Large arrays allocated one after another start at the same offset in a
    page, at power-of-two distances, and streaming them together loses
    bandwidth to cache-set and DRAM-bank conflicts (measured on the 2-core
    test machine: Adam at 16M float32 elements, 2 threads, 5-10 % faster
    with the state staggered, in 6 of 9 interleaved rounds; the roofline
    kernel over separately allocated 32M arrays lost up to 2.7x).  Costs at
    most 3 * 256 KiB on buffers of at least 32 MiB."""
    if k <= 0 or buf.nbytes < STAGGER_MIN_BYTES:
        return buf
    off = k * STAGGER_BYTES // buf.itemsize
    raw = np.empty(buf.size + off, dtype=buf.dtype)
    out = raw[off:].reshape(buf.shape)
    out[...] = buf
    return out


def _span(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


class Optimizer:
    """Base class: param groups, state and validation; not used directly."""

    _hyper = {}        # name -> check(name, value); the order is the signature's
    _defaults = {}     # name -> default value

    def __init__(self, params, defaults, n_threads=None):
        resolve_threads(n_threads)
        self.defaults = {k: self._hyper[k](k, v) for k, v in defaults.items()}
        self.n_threads = n_threads
        self.param_groups = []
        self.state = {}
        self._hyper_cache = {}
        self._lock = threading.RLock()
        self._params = []
        if isinstance(params, np.ndarray):
            raise TypeError("params must be a sequence of arrays or of dicts, got a "
                            "single array: wrap it in a list")
        params = list(params)
        if not params:
            raise ValueError("params is empty: the optimizer needs at least one array")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def __getstate__(self):
        """Pickle and deepcopy: everything but the lock and the caches."""
        with self._lock:
            state = dict(self.__dict__)
        for k in ("_lock", "_hyper_cache", "_spans", "_tables", "_plan"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._hyper_cache = {}
        self._changed()

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v!r}" for k, v in g.items() if k != "params"]
        return "\n".join(lines + [")"])

    # --- groups
    def _check_group(self, group):
        """Return the group's hyperparameters, checked and cleaned."""
        unknown = set(group) - set(self._hyper) - {"params"}
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} for "
                             f"{type(self).__name__}; known: {list(self._hyper)}")
        missing = [k for k in self._hyper if k not in group]
        if missing:
            raise ValueError(f"param group is missing hyperparameter(s) {missing}")
        return {k: check(k, group[k]) for k, check in self._hyper.items()}

    def add_param_group(self, group):
        """Add a dict ``{"params": [...], hyperparameter: value, ...}``."""
        with self._lock:
            if not isinstance(group, dict):
                raise TypeError(f"param group must be a dict, got {type(group).__name__}")
            if "params" not in group:
                raise ValueError("param group has no 'params' entry")
            params = group["params"]
            params = [params] if isinstance(params, np.ndarray) else list(params)
            if not params:
                raise ValueError("param group 'params' is empty")
            base = len(self._params)
            for k, p in enumerate(params):
                check_param(f"params[{base + k}]", p)
            self._check_no_overlap(self._params + params, "params")
            new = ParamGroup({**self.defaults, **group, "params": params})
            self._check_group(new)
            self.param_groups.append(new)
            self._params.extend(params)
            self._changed()

    @staticmethod
    def _check_no_overlap(arrays, what):
        spans = sorted((*_span(a), i) for i, a in enumerate(arrays) if a.size)
        for (s0, e0, i0), (s1, e1, i1) in zip(spans, spans[1:]):
            if s1 < e0:
                i, j = sorted((i0, i1))
                raise ValueError(f"{what}[{i}] and {what}[{j}] share memory"
                                 + (" (the same array twice)" if arrays[i] is arrays[j] else ""))

    def _changed(self):
        """Params or state buffers were added or replaced."""
        self._spans = None

    def _owned_spans(self):
        """Memory spans of every param and state buffer, sorted (cached):
        (starts, spans) for bisect, and the same starts and ends as uint64
        arrays for _kernels.gather."""
        if self._spans is None:
            spans = [_span(p) + (f"params[{i}]",) for i, p in enumerate(self._params) if p.size]
            for i, st in self.state.items():
                spans += [_span(b) + (f"state[{i}][{k!r}]",) for k, b in st.items()
                          if isinstance(b, np.ndarray) and b.size]
            spans.sort()
            starts = [s for s, _, _ in spans]
            self._spans = (starts, spans, np.array(starts, dtype=np.uint64),
                           np.array([e for _, e, _ in spans], dtype=np.uint64))
        return self._spans

    # --- gradients
    def _check_grads(self, grads):
        params = self._params
        if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
            raise TypeError("grads must be a list or tuple with one array (or None) per "
                            f"parameter, got {_describe(grads)}")
        if len(grads) != len(params):
            raise ValueError(f"grads has {len(grads)} entries, the optimizer has "
                             f"{len(params)} parameters")
        starts, spans = self._owned_spans()[:2]
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] must be a NumPy array or None, got {_describe(g)}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype}, params[{i}] has "
                                f"{p.dtype}: no silent cast is made")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, params[{i}] has {p.shape}")
            if not g.flags.c_contiguous:
                raise ValueError(f"grads[{i}] must be C-contiguous (no silent copy is made)")
            if not g.flags.aligned:
                raise ValueError(f"grads[{i}] is not aligned to its dtype's size; pass an "
                                 "aligned copy")
            if g.size:
                s, e = _span(g)
                k = bisect.bisect_left(starts, e)  # spans starting before g ends
                if k and spans[k - 1][1] > s:
                    raise ValueError(f"grads[{i}] shares memory with {spans[k - 1][2]}: "
                                     "pass a separate gradient array")
                # An earlier span may be long enough to cover g although the
                # one just before it does not: only possible for overlapping
                # spans, which _check_no_overlap rules out among params, and
                # state buffers are fresh allocations.
        return grads

    # --- stepping
    def step(self, grads):
        """Update every parameter whose gradient is not None, in place.

        ``grads`` has one entry per parameter, in the order the parameters
        were given (over all groups).  Thread-safe: concurrent calls on one
        optimizer are serialised by a lock.
        """
        with self._lock:
            if not self._step_fast(grads):
                self._step_general(grads)

    def _step_fast(self, grads):
        """A shortcut for the common case; False: take the general path."""
        return False

    def _step_general(self, grads):
        grads = self._check_grads(grads)
        plans = []
        base = 0
        for gi, group in enumerate(self.param_groups):
            hyper = self._hyper_of(gi)
            n = len(group["params"])
            batches = {}  # step number -> indices stepping to it
            for i in range(base, base + n):
                if grads[i] is not None:
                    st = self.state.get(i)
                    batches.setdefault((st["step"] if st else 0) + 1, []).append(i)
            for step, idx in batches.items():
                plans.append((self._resolve_lr(hyper, step), step, idx))
            base += n
        for hyper, step, idx in plans:
            for i in idx:
                self._ensure_state(i, hyper)
            self._apply(hyper, step, idx, grads)
            for i in idx:
                self.state[i]["step"] = step

    def _hyper_of(self, gi):
        """Group gi's checked hyperparameters, re-checked when the group changed.

        The checked values are written back (a list becomes a tuple, an int
        a float), so no mutable value hides a change from the version."""
        group = self.param_groups[gi]
        cached = self._hyper_cache.get(gi)
        version = getattr(group, "version", None)  # None: a plain dict put there by hand
        if cached is not None and cached[0] is group and version is not None and cached[1] == version:
            return cached[2]
        hyper = self._check_group(group)
        group.update(hyper)
        self._hyper_cache[gi] = (group, getattr(group, "version", None), hyper)
        return hyper

    @staticmethod
    def _resolve_lr(hyper, step):
        lr = hyper["lr"]
        if callable(lr):
            value = lr(step)
            try:
                value = nonneg("lr", value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"the lr schedule returned {value!r} at step {step}: {e}") from None
            hyper = {**hyper, "lr": value}
        return hyper

    def _ensure_state(self, i, hyper):
        st = self.state.setdefault(i, {"step": 0})
        p = self._params[i]
        for name in self._buffers(hyper):
            if name not in st:
                buf = self._init_buffer(name, p, hyper)
                st[name] = staggered_copy(buf, 1 + sum(isinstance(v, np.ndarray) for v in st.values()))
                self._changed()

    def _buffers(self, hyper):
        raise NotImplementedError

    def _required(self, hyper):
        """Buffers a state that has taken a step must have."""
        return self._buffers(hyper)

    def _init_buffer(self, name, p, hyper):
        return np.zeros_like(p)

    def _apply(self, hyper, step, idx, grads):
        raise NotImplementedError

    # --- state_dict
    def state_dict(self):
        """Plain data in torch's layout; buffers are copies."""
        with self._lock:
            groups, base = [], 0
            for g in self.param_groups:
                n = len(g["params"])
                groups.append({**{k: v for k, v in g.items() if k != "params"},
                               "params": list(range(base, base + n))})
                base += n
            state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                         for k, v in st.items()} for i, st in self.state.items()}
            return {"state": state, "param_groups": copy.deepcopy(groups)}

    def load_state_dict(self, state_dict):
        """Replace hyperparameters and state; validated first, atomic.

        Buffers are copied, so the state_dict stays independent of the
        optimizer."""
        with self._lock:
            groups, state = self._check_state_dict(state_dict)
            for g, new in zip(self.param_groups, groups):
                g.update(new)
            self.state = state
            self._changed()

    def save(self, path):
        """Write a checkpoint (.npz, crash-safe, no pickle) of state_dict() to path."""
        from . import _checkpoint
        with self._lock:
            _checkpoint.save(self, path)

    def load(self, path):
        """Load a checkpoint written by save(); ValueError if invalid, nothing changed."""
        from . import _checkpoint
        with self._lock:
            self.load_state_dict(_checkpoint.read(path, type(self).__name__))

    def _check_state_dict(self, sd):
        if not isinstance(sd, dict) or set(sd) != {"state", "param_groups"}:
            raise ValueError("state_dict must be a dict with exactly the keys "
                             "'state' and 'param_groups'")
        saved = sd["param_groups"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.param_groups):
            n = len(saved) if isinstance(saved, (list, tuple)) else type(saved).__name__
            raise ValueError(f"state_dict has {n} param groups, the optimizer has "
                             f"{len(self.param_groups)}")
        groups, hypers, base = [], [], 0
        for gi, (g, s) in enumerate(zip(self.param_groups, saved)):
            n = len(g["params"])
            where = f"state_dict['param_groups'][{gi}]"
            if not isinstance(s, dict) or "params" not in s:
                raise ValueError(f"{where} must be a dict with 'params'")
            expected = list(range(base, base + n))
            if list(s["params"]) != expected:
                raise ValueError(f"{where}['params'] is {list(s['params'])!r}, expected "
                                 f"{expected!r} (the number of parameters must match)")
            missing = set(self._hyper) - set(s)
            if missing:
                raise ValueError(f"{where} is missing {sorted(missing)}")
            try:
                hyper = self._check_group({**s, "params": g["params"]})
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from None
            groups.append(hyper)
            hypers += [hyper] * n
            base += n
        raw = sd["state"]
        if not isinstance(raw, dict):
            raise ValueError("state_dict['state'] must be a dict")
        state = {}
        known = {"step"} | set(self._all_buffers)
        for key, st in raw.items():
            i = _index(key)
            if i is None or not 0 <= i < len(self._params):
                raise ValueError(f"state_dict['state'] has an entry for parameter {key!r}, "
                                 f"the optimizer has parameters 0..{len(self._params) - 1}")
            if i in state:
                raise ValueError(f"state_dict['state'] has two entries for parameter {i}")
            where = f"state_dict['state'][{key!r}]"
            if not isinstance(st, dict) or "step" not in st:
                raise ValueError(f"{where} must be a dict with a 'step'")
            extra = set(st) - known
            if extra:
                raise ValueError(f"{where} has unknown key(s) {sorted(extra)}")
            step = st["step"]
            step = step.item() if isinstance(step, (np.ndarray, np.generic)) and step.size == 1 else step
            if isinstance(step, bool) or not isinstance(step, numbers.Real) or not (
                    math.isfinite(step) and step >= 0 and float(step).is_integer()):
                raise ValueError(f"{where}['step'] must be a finite non-negative whole "
                                 f"number, got {step!r}")
            if step > 0:
                missing = set(self._required(hypers[i])) - set(st)
                if missing:
                    raise ValueError(f"{where} is missing {sorted(missing)} (step {step})")
            p = self._params[i]
            clean = {"step": int(step)}
            for k, v in st.items():
                if k == "step":
                    continue
                if not isinstance(v, np.ndarray) or v.dtype != p.dtype or v.shape != p.shape:
                    raise ValueError(f"{where}[{k!r}] must be an array of dtype {p.dtype} and "
                                     f"shape {p.shape}, got {_describe(v)}")
                clean[k] = np.array(v, dtype=p.dtype, order="C", copy=True)
            state[i] = clean
        return groups, state


def _index(key):
    """A parameter index from an int or a string of digits (as JSON keys are)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None
