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
from .algorithms import SPECS

__all__ = [s.name for s in SPECS]

_DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}
_MAX_PLANS = 64


def _address(a):
    return a.__array_interface__["data"][0]


def _counters(batch, work, new_s):
    """A NumPy batch's counters: the state values its rows hold before the
    step and get after it."""
    c = [("step", work.t - 1, work.t)]
    if work.s:
        c += [(k, work.s[k], new_s[k]) for k in work.s]
    batch.counters = c


class _Fast(_base.Optimizer):
    def _step_fast(self, grads):
        if type(grads) is not list and type(grads) is not tuple:
            return False
        plans = self._plans
        if not plans or type(self.state) is not dict or len(grads) != len(self._params):
            return False
        plan = plans.get(_kernels.none_mask(grads))
        if plan is None or not _engine.same_layout(self._layout, self.param_groups):
            return False
        for w in plan.work:
            if not w.snap.holds(w.snap.group):
                return False
        spans, state = plan.spans.compiled, self.state
        if not all(b.check_numpy(grads, spans, state) < 0 for b in plan.batches):
            # another plan may have stepped some of these parameters: recount, check again
            if not plan.resync(self._read_counters, _counters) or not all(
                    b.check_numpy(grads, spans, state) < 0 for b in plan.batches):
                return False
        plan.run(plan.prepare(), resolve_threads(self.n_threads), _counters)
        return True

    def _read_counters(self, batch):
        """(step to take, scalar state) shared by the batch's rows, or None."""
        keys = tuple(self.spec.scalar_state)
        seen = {(st.get("step"),) + tuple(st.get(k) for k in keys) for st in batch.states}
        if len(seen) != 1:
            return None
        (step, *s), = seen
        if type(step) is not int:
            return None
        return step + 1, dict(zip(keys, s)) if keys else None

    def _apply(self, grads, snaps, resolved, batches):
        spec = self.spec
        plan = _engine.Plan(None)
        for (gi, dtype, t, s, first), idx in batches.items():
            h = resolved[gi, t]
            for i in idx:  # buffers the first gradient fills (SGD's momentum)
                for name in first:
                    self.state[i][name] = np.empty_like(self._params[i])
            extra = _kernels.flag_bits(spec.kernel, spec.first_flag) if first else 0
            plan.add(self._batch(idx, spec.buffers(h), dtype),
                     _engine.Work(snaps[gi], t, dict(s) if s else None, extra, h))
        plan.spans = self._owned_spans(self._params, self.state)
        for b in plan.batches:
            if b.check_numpy(grads, plan.spans.compiled, self.state) >= 0:
                raise RuntimeError("adaptopt: a validated step failed the engine's check")
        plan.run(plan.prepare(), resolve_threads(self.n_threads), _counters)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[_kernels.none_mask(grads)] = plan

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


for _spec in SPECS:
    globals()[_spec.name] = _classes.make(
        _spec, _Fast, "adaptopt",
        "One compiled pass over memory per step, bit for bit equal to "
        f"``adaptopt.reference.{_spec.name}`` on every SIMD path and thread count.")
del _spec
