"""The optimizers: reference semantics, updates done by the compiled engine.

Each class is its twin in ``adaptopt.reference`` (same signature, checks
and state) with the update done by the C kernels: one call updates every
array of a batch in a single pass.  A batch is the arrays of one param
group with the same dtype, step count and scalar state (normally the whole
group).

The common step runs from a cached plan (``_engine.Plan``: the kernel
calls, with a reference to every array they address), one per step shape
(which parameters have a gradient).  Before the kernels run, compiled code
re-checks that the param groups hold the same lists and parameters, that
the hyperparameters are the same objects, and that every array and state
buffer the plan addresses still has its address, size, dtype and
writability, and checks each gradient.  Anything else — a first step, a
None that was not there, an edited group, a replaced or resized array —
takes the general path of ``_base.Optimizer``, which validates everything
(raising an error that names the argument) and builds a new plan.
"""

import numpy as np

from . import _base, _classes, _engine, _kernels
from ._config import resolve_threads
from .algorithms import ENTRY_SPECS, SPECS

__all__ = [s.name for s in SPECS + ENTRY_SPECS]

_DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}
_MAX_PLANS = 64


def _address(a):
    """The lowest address of a dense array (its data pointer unless a stride is negative)."""
    return _base._span(a)[0]


def _counters(batch, work, new_s):
    """A NumPy batch's scalar-state counters: what its rows hold before the
    step and get after it."""
    batch.counters = [(k, work.s[k], new_s[k]) for k in work.s]


class _Fast(_base.Optimizer):
    def __init__(self, *args, **kwargs):
        self._rows = _engine.Rows()
        super().__init__(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_rows", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._rows = _engine.Rows()
    def _step_fast(self, grads):
        plan = self._last
        if plan is None or (type(grads) is not list and type(grads) is not tuple):
            return False
        state = self.state
        if type(state) is not dict or len(grads) != len(self._params):
            return False
        done = _kernels.fast_step(plan, self.param_groups, grads, state,
                                  resolve_threads(self.n_threads))
        if not done:  # gradients that np.asarray views (jax, memoryview): as arrays
            try:
                arrays = _base.as_arrays(grads)
            except TypeError:
                return False  # the general path names the entry
            if arrays is not grads:
                return self._step_fast(arrays)
        if not done:  # another subset's plan, or one whose counts other plans moved
            plan = self._plans.get(_kernels.none_mask(grads))
            if plan is None:  # a subset not seen before: its parameters' rows
                plan = self._rows.plan([i for i, g in enumerate(grads) if g is not None],
                                       self._layout, _counters)
                if plan is None or not plan.resync(self._read_counters):
                    return False
                if not _kernels.fast_check(plan, self.param_groups, grads, state):
                    self._rows.wanted = True
                    return False
                plan.step(resolve_threads(self.n_threads))  # never common: per-row scalars
                return True
            if not plan.resync(self._read_counters):
                return False
            done = _kernels.fast_step(plan, self.param_groups, grads, state,
                                      resolve_threads(self.n_threads))
            if not done:
                return False
            self._last = plan
        if done == 2:
            plan.step(resolve_threads(self.n_threads))
        return True

    def _read_counters(self, batch):
        """(step to take, scalar state) shared by the batch's rows, or None."""
        keys = tuple(self.spec.scalar_state)
        seen = {(st.get("step"),) + tuple(st.get(k) for k in keys) for st in batch.states}
        if len(seen) != 1:
            return None
        (step, *s), = seen
        if type(step) is not int or step < 0 or not all(type(v) is float for v in s):
            return None  # not a valid state: the general path says what is wrong
        return step + 1, dict(zip(keys, s)) if keys else None

    def _apply(self, grads, snaps, resolved, batches):
        spec = self.spec
        plan = _engine.Plan(_counters)
        for (gi, dtype, t, s, first), idx in batches.items():
            h = resolved[gi, t]
            for i in idx:  # buffers the first gradient fills (SGD's momentum)
                for name in first:
                    self.state[i][name] = _base.like(self._params[i])
            extra = _kernels.flag_bits(spec.kernel, spec.first_flag) if first else 0
            b = self._batch(idx, spec.buffers(h), dtype)
            b.t = t
            plan.add(b, _engine.Work(snaps[gi], dict(s) if s else None, extra, h))
        plan.spans = self._owned_spans(self._params, self.state, self._used(grads, snaps))
        plan.layout = self._layout
        if not _kernels.check_numpy_all(plan.batches, grads, plan.spans.compiled, self.state):
            raise RuntimeError("adaptopt: a validated step failed the engine's check")
        plan.step(resolve_threads(self.n_threads))
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[_kernels.none_mask(grads)] = self._last = plan
        if self._rows.wanted:
            self._refresh_rows(snaps)

    def _refresh_rows(self, snaps):
        """The one-parameter rows (_engine.Rows) of every parameter whose state
        is complete and valid, made where missing or stale."""
        rows, new = self._rows.rows, {}

        def fresh(i, b):
            st = self.state.get(i)
            return (i < len(self._params) and b.objs[0] is self._params[i]
                    and b.states[0] is st and all(
                        k is None or st.get(k) is b.objs[j] for j, k in enumerate(b.keys)))

        i = 0
        for gi, group in enumerate(self.param_groups):
            h = snaps[gi].hyper
            names = self.spec.buffers(h)
            for _ in group["params"]:
                st, r = self.state.get(i), rows.get(i)
                if (isinstance(st, dict) and not (r is not None and fresh(i, r[0]))
                        and all(k in st for k in names + ("step",) + tuple(self.spec.scalar_state))):
                    try:
                        self._check_state(i, h)
                        new[i] = (self._batch([i], names, self._params[i].dtype),
                                  _engine.Work(snaps[gi], None))
                    except (TypeError, ValueError):
                        pass  # its own step will say what is wrong
                i += 1

        self._rows.refresh(self._layout, new, fresh,
                           lambda: self._owned_spans(self._params, self.state))

    def _batch(self, idx, names, dtype):
        """The compiled Batch of parameters idx with state buffers names."""
        spec = self.spec
        keys = (None, None) + tuple(n if n in names else None for n in spec.kernel_buffers)
        objs, states = [], []
        for i in idx:
            st = self.state[i]
            states.append(st)
            objs += [self._params[i], None] + [st[k] if k else None for k in keys[2:]]
        ptrs = [0 if a is None else _address(a) for a in objs]
        nbytes = [0 if a is None else a.nbytes for a in objs]
        return _kernels.Batch(_kernels.KIND_NUMPY, spec.code, _DTYPE_CODE[dtype], keys, objs,
                              states, ptrs, nbytes, [self._params[i].size for i in idx],
                              index=list(idx))


class _Entry(_base.Optimizer):
    """An algorithm with its own C entry point (Adafactor: a reduction pass,
    then the update): one call per parameter, every step from the general
    path, which validates every array (the state buffers against the shapes
    the algorithm gives them) before the first call."""

    def _apply(self, grads, snaps, resolved, batches):
        spec, threads = self.spec, resolve_threads(self.n_threads)
        entry = getattr(_kernels, spec.entry["function"])
        module = __import__(spec.update.__module__, fromlist=["kernel_call"])
        calls = []
        for (gi, _, t, _, _), idx in batches.items():
            for i in idx:
                calls.append((module.kernel_call(resolved[gi, t], t, self._params[i], grads[i],
                                                 self.state[i], threads), i, t))
        for args, i, t in calls:
            rc = entry(*args)
            if rc != _kernels.OK:
                raise RuntimeError(f"adaptopt {spec.name} kernel failed with code {rc}")
            self.state[i]["step"] = t


for _spec in ENTRY_SPECS:
    globals()[_spec.name] = _classes.make(
        _spec, _Entry, "adaptopt",
        "A fused, threaded reduction pass and a fused update pass per parameter, with a "
        "fixed reduction order: bit for bit equal to "
        f"``adaptopt.reference.{_spec.name}`` on every SIMD path and thread count.")

for _spec in SPECS:
    globals()[_spec.name] = _classes.make(
        _spec, _Fast, "adaptopt",
        "One compiled pass over memory per step, bit for bit equal to "
        f"``adaptopt.reference.{_spec.name}`` on every SIMD path and thread count.")
del _spec
