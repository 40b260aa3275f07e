"""The optimizers: reference semantics, updates done by the C kernels.

Each class is its twin in ``adaptopt.reference`` (same signature, checks and
state) with ``_apply`` replaced: instead of NumPy operations per array, one
call into C updates every array of a batch in a single pass.  A batch is
the arrays of one param group with the same dtype and step count (normally
the whole group).  The scalars of a step are computed here, in double, in
the same expressions the reference evaluates.
"""

import math

import numpy as np

from . import _kernels, reference
from ._config import resolve_threads

__all__ = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"]

_DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


class _Batch:
    """One kernel call of the fast path: arrays idx of group gi, one dtype.

    fixed is _kernel_fixed(hyper) for the group's checked hyperparameters
    hyper (None under an lr schedule); flags and scal, the next call's."""

    __slots__ = ("gi", "names", "idx", "ptr", "offsets", "code", "step", "states",
                 "hyper", "fixed", "flags", "scal")

    def __init__(self, gi, names, idx, ptr, offsets, dtype, step, states):
        self.gi, self.names, self.idx, self.ptr = gi, names, idx, ptr
        self.offsets, self.step, self.states = offsets, step, states
        self.code = _DTYPE_CODE[dtype]
        self.hyper = self.fixed = self.flags = self.scal = None


class _Fast:
    """Mixin over a reference class: batches arrays into one kernel call.

    The common step (every gradient given, every state created, one step
    count per group and dtype) runs from a cached plan: per batch an index
    array, a pointer table and offsets.  _kernels.gather checks each
    gradient and writes its address into the table; if anything is off
    (a None, a wrong shape, ...) the general path of the base class runs
    instead, which raises the precise error or handles the None.
    """

    _algo = None        # key of _kernels.ALGOS
    _nbuf = None        # buffers per array, in the kernel's order

    def __init__(self, *args, **kwargs):
        self._tables = {}
        self._plan = None
        super().__init__(*args, **kwargs)

    def _changed(self):
        super()._changed()
        self._tables = {}
        self._plan = None

    def _table(self, idx, names):
        """Pointer table and offsets for arrays idx with state buffers names."""
        key = (tuple(idx), names)
        table = self._tables.get(key)
        if table is None:
            ptr = np.zeros((len(idx), self._nbuf), dtype=np.uint64)
            offsets = np.zeros(len(idx) + 1, dtype=np.uintp)
            for row, i in enumerate(idx):
                p, st = self._params[i], self.state[i]
                arrays = [p, None] + [st.get(k) if k else None for k in names]
                _kernels.fill_pointers(arrays, ptr[row], 0, 1)
                offsets[row + 1] = offsets[row] + p.size
            table = self._tables[key] = (ptr.ravel(), offsets)
        return table

    def _run(self, code, ptr, offsets, flags, scal, n_threads):
        """One kernel call: dtype code, pointer table, offsets, flags, scalars."""
        rc = _kernels.step(_kernels.ALGOS[self._algo], code, ptr, self._nbuf,
                           offsets, scal, flags, n_threads)
        if rc != _kernels.OK:
            raise RuntimeError(f"adaptopt kernel {self._algo} failed with code {rc}")

    # --- the general path: any subset of arrays, called by the base class
    def _step_general(self, grads):
        self._plan = None
        super()._step_general(grads)

    def _apply(self, hyper, step, idx, grads):
        flags, scal = self._kernel_args(hyper, step)
        n_threads = resolve_threads(self.n_threads)
        by_dtype = {}
        for i in idx:
            by_dtype.setdefault(self._params[i].dtype, []).append(i)
        for dtype, sub in by_dtype.items():
            for sub, extra in self._split(sub):
                ptr, offsets = self._table(sub, self._kernel_buffers(hyper))
                _kernels.fill_pointers([grads[i] for i in sub], ptr, 1, self._nbuf)
                self._run(_DTYPE_CODE[dtype], ptr, offsets, flags | extra, scal, n_threads)

    def _split(self, idx):
        """Sub-batches needing extra flags (SGD's first momentum step)."""
        return [(idx, 0)]

    # --- the fast path
    def _make_plan(self):
        """A list of _Batch, or False when the state is not uniform enough
        for the fast path."""
        plan, base = [], 0
        for gi, group in enumerate(self.param_groups):
            names = self._kernel_buffers(self._hyper_of(gi))
            by_dtype = {}
            for i in range(base, base + len(group["params"])):
                st = self.state.get(i)
                if st is None or any(k and st.get(k) is None for k in names):
                    return False
                by_dtype.setdefault(self._params[i].dtype, []).append(i)
            for dtype, idx in by_dtype.items():
                steps = {self.state[i]["step"] for i in idx}
                if len(steps) != 1:
                    return False
                ptr, offsets = self._table(idx, names)
                plan.append(_Batch(gi, names, np.array(idx, dtype=np.intp), ptr, offsets,
                                   dtype, steps.pop(), [self.state[i] for i in idx]))
            base += len(group["params"])
        return plan

    def _step_fast(self, grads):
        plan = self._plan
        if plan is None:
            plan = self._plan = self._make_plan()
        if not plan or type(grads) not in (list, tuple) or len(grads) != len(self._params):
            return False
        starts, ends = (self._spans or self._owned_spans())[2:]
        gather, params, nbuf = _kernels.gather, self._params, self._nbuf
        for b in plan:  # everything that can raise happens before the first kernel runs
            if gather(grads, params, b.idx, b.ptr, nbuf, starts, ends) >= 0:
                return False
            hyper = self._hyper_of(b.gi)
            if hyper is not b.hyper:
                if self._kernel_buffers(hyper) != b.names:
                    self._plan = None
                    return False
                b.hyper = hyper
                b.fixed = None if callable(hyper["lr"]) else self._kernel_fixed(hyper)
            if b.fixed is None:  # an lr schedule
                b.flags, b.scal = self._kernel_args(self._resolve_lr(hyper, b.step + 1), b.step + 1)
            else:
                b.flags, b.scal = b.fixed
                b.scal += self._kernel_step(hyper, b.step + 1)
        n_threads = resolve_threads(self.n_threads)
        for b in plan:
            self._run(b.code, b.ptr, b.offsets, b.flags, b.scal, n_threads)
            b.step += 1
            _kernels.assign(b.states, "step", b.step)
        return True

    # --- the kernel's flags and scalars, computed in double the way the
    # reference computes them; those that change every step come last
    @classmethod
    def _kernel_args(cls, hyper, step):
        """(flags, scalars) of a step to `step` under hyper (lr resolved)."""
        flags, fixed = cls._kernel_fixed(hyper)
        return flags, fixed + cls._kernel_step(hyper, step)

    @classmethod
    def _kernel_fixed(cls, hyper):
        """(flags, the scalars that do not depend on the step)."""
        raise NotImplementedError

    @staticmethod
    def _kernel_step(hyper, step):
        """The scalars that do: appended to _kernel_fixed's."""
        return ()


_fl = _kernels.flag_bits
MAXIMIZE, L2, DECOUPLED, AMSGRAD = (_fl("adam", n) for n in ("maximize", "l2", "decoupled", "amsgrad"))
CENTERED, MOMENTUM = _fl("rmsprop", "centered"), _fl("rmsprop", "momentum")
SGD_MOMENTUM, NESTEROV, FIRST = (_fl("sgd", n) for n in ("momentum", "nesterov", "first"))


class Adam(_Fast, reference.Adam):
    __doc__ = reference.Adam.__doc__
    _algo, _nbuf = "adam", 5

    def _kernel_buffers(self, hyper):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if hyper["amsgrad"] else None)

    @classmethod
    def _kernel_fixed(cls, hyper):
        lr, (b1, b2), wd = hyper["lr"], hyper["betas"], hyper["weight_decay"]
        flags = ((MAXIMIZE if hyper["maximize"] else 0) | (AMSGRAD if hyper["amsgrad"] else 0)
                 | (0 if wd == 0 else DECOUPLED if cls._decoupled else L2))
        return flags, (1 - b1, b2, 1 - b2, 1 - lr * wd if cls._decoupled else wd, hyper["eps"])

    @staticmethod
    def _kernel_step(hyper, step):
        (b1, b2) = hyper["betas"]
        return math.sqrt(1 - b2 ** step), -(hyper["lr"] / (1 - b1 ** step))


class AdamW(Adam, reference.AdamW):
    __doc__ = reference.AdamW.__doc__


class Adagrad(_Fast, reference.Adagrad):
    __doc__ = reference.Adagrad.__doc__
    _algo, _nbuf = "adagrad", 3

    def _kernel_buffers(self, hyper):
        return ("sum",)

    @classmethod
    def _kernel_fixed(cls, hyper):
        wd = hyper["weight_decay"]
        return (MAXIMIZE if hyper["maximize"] else 0) | (L2 if wd != 0 else 0), (wd, hyper["eps"])

    @staticmethod
    def _kernel_step(hyper, step):
        return (-(hyper["lr"] / (1 + (step - 1) * hyper["lr_decay"])),)


class RMSprop(_Fast, reference.RMSprop):
    __doc__ = reference.RMSprop.__doc__
    _algo, _nbuf = "rmsprop", 5

    def _kernel_buffers(self, hyper):
        return ("square_avg", "momentum_buffer" if hyper["momentum"] > 0 else None,
                "grad_avg" if hyper["centered"] else None)

    @classmethod
    def _kernel_fixed(cls, hyper):
        alpha, wd, mom = hyper["alpha"], hyper["weight_decay"], hyper["momentum"]
        flags = ((MAXIMIZE if hyper["maximize"] else 0) | (L2 if wd != 0 else 0)
                 | (CENTERED if hyper["centered"] else 0) | (MOMENTUM if mom > 0 else 0))
        return flags, (alpha, 1 - alpha, hyper["eps"], wd, mom, -hyper["lr"])


class SGD(_Fast, reference.SGD):
    __doc__ = reference.SGD.__doc__
    _algo, _nbuf = "sgd", 3

    def _buffers(self, hyper):
        return ("momentum_buffer",) if hyper["momentum"] != 0 else ()

    def __init__(self, *args, **kwargs):
        self._first = set()  # indices whose momentum buffer has not been stepped
        super().__init__(*args, **kwargs)

    def _ensure_state(self, i, hyper):
        if hyper["momentum"] != 0 and "momentum_buffer" not in self.state.get(i, {}):
            self._first.add(i)
        super()._ensure_state(i, hyper)

    def _init_buffer(self, name, p, hyper):
        return np.empty_like(p)  # written with the first step's gradient

    def _split(self, idx):
        first = [i for i in idx if i in self._first]
        if not first:
            return [(idx, 0)]
        self._first.difference_update(first)
        rest = [i for i in idx if i not in first]
        return [(b, f) for b, f in ((first, FIRST), (rest, 0)) if b]

    def _kernel_buffers(self, hyper):
        return ("momentum_buffer" if hyper["momentum"] != 0 else None,)

    @classmethod
    def _kernel_fixed(cls, hyper):
        wd, mom = hyper["weight_decay"], hyper["momentum"]
        flags = ((MAXIMIZE if hyper["maximize"] else 0) | (L2 if wd != 0 else 0)
                 | (SGD_MOMENTUM if mom != 0 else 0) | (NESTEROV if hyper["nesterov"] else 0))
        return flags, (wd, mom, 1 - hyper["dampening"], -hyper["lr"])
