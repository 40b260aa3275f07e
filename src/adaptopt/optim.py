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

from . import _amp, _base, _classes, _engine, _kernels, _precision
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


_STORE_CODE = {np.dtype(np.float32): _kernels.STORE_F32, np.dtype(np.float64): _kernels.STORE_F64,
               np.dtype(np.float16): _kernels.STORE_F16}
try:
    _STORE_CODE[_precision.numpy_dtype("bfloat16")] = _kernels.STORE_BF16
except ImportError:  # ml_dtypes is optional
    pass


def _sumsq(self, grads):
    """_amp.sumsq in one compiled, threaded pass (csrc/gradnorm.c)."""
    n = len(grads)
    ptr = np.empty(n, dtype=np.uint64)
    _kernels.fill_pointers(grads, ptr, 0, 1)
    codes = np.fromiter((_STORE_CODE[g.dtype] for g in grads), dtype=np.intc, count=n)
    offsets = np.zeros(n + 1, dtype=np.uintp)
    np.cumsum(np.fromiter((g.size for g in grads), dtype=np.uintp, count=n), out=offsets[1:])
    rc, s, _ = _kernels.grad_sumsq(ptr, codes, offsets, resolve_threads(self.n_threads))
    if rc != _kernels.OK:
        raise MemoryError("adaptopt: no memory for the gradient norm's block sums") \
            if rc == -4 else RuntimeError(f"adaptopt gradient norm failed with code {rc}")
    return s


class _Fast(_base.Optimizer):
    _sumsq = _sumsq

    def _fast_valid(self, grads):
        plan = self._last
        if (plan is None or (type(grads) is not list and type(grads) is not tuple)
                or type(self.state) is not dict or len(grads) != len(self._params)):
            return False
        given = sum(g is not None for g in grads)
        return given == plan.rows and _kernels.fast_check(plan, self.param_groups, grads,
                                                          self.state)

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

    def _step_fast(self, grads, scale=None):
        plan = self._last
        if plan is None or (type(grads) is not list and type(grads) is not tuple):
            return False
        state = self.state
        if type(state) is not dict or len(grads) != len(self._params):
            return False
        done = _kernels.fast_step(plan, self.param_groups, grads, state,
                                  resolve_threads(self.n_threads), scale)
        if not done:  # gradients that np.asarray views (jax, memoryview): as arrays
            try:
                arrays = _base.as_arrays(grads)
            except TypeError:
                return False  # the general path names the entry
            if arrays is not grads:
                return self._step_fast(arrays, scale)
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
                plan.step(resolve_threads(self.n_threads), scale)  # never common: per-row scalars
                return True
            if not plan.resync(self._read_counters):
                return False
            done = _kernels.fast_step(plan, self.param_groups, grads, state,
                                      resolve_threads(self.n_threads), scale)
            if not done:
                return False
            self._last = plan
        if done == 2:
            plan.step(resolve_threads(self.n_threads), scale)
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

    def _apply(self, grads, snaps, resolved, batches, scale=None):
        spec = self.spec
        plan = _engine.Plan(_counters)
        for (gi, dtypes, t, s, first), rows in batches.items():
            h = resolved[gi, t]
            by_type = {}  # int8 state: parameters below its size keep float32 state
            for i in rows:
                by_type.setdefault(_precision.types(*map(_precision.name_of, dtypes), h,
                                                    size=self._params[i].size,
                                                    c_order=self._params[i].flags.c_contiguous),
                                   []).append(i)
            for ty, idx in by_type.items():
                for i in idx:  # buffers the first gradient fills (SGD's momentum)
                    for name in first:
                        self.state[i][name] = _base.like(self._params[i], None,
                                                         _precision.numpy_dtype(ty.state))
                        if ty.state == _precision.INT8:
                            self.state[i][_precision.absmax_key(name)] = np.empty(
                                -(-self._params[i].size // _kernels.BLOCK), np.float32)
                extra = _kernels.flag_bits(spec.kernel, spec.first_flag) if first else 0
                b = self._batch(idx, spec.buffers(h), ty, h)
                b.t = t
                plan.add(b, _engine.Work(snaps[gi], dict(s) if s else None, extra, h))
        plan.spans = self._owned_spans(self._params, self.state, self._used(grads, snaps))
        plan.layout = self._layout
        if not _kernels.check_numpy_all(plan.batches, grads, plan.spans.compiled, self.state):
            raise RuntimeError("adaptopt: a validated step failed the engine's check")
        plan.step(resolve_threads(self.n_threads), scale)
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
            return (i < len(self._params) and _kernels.row_param(b, 0) is self._params[i]
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
                        new[i] = (self._batch([i], names, self._types(self._params[i], h), h),
                                  _engine.Work(snaps[gi], None))
                    except (TypeError, ValueError):
                        pass  # its own step will say what is wrong
                i += 1

        self._rows.refresh(self._layout, new, fresh,
                           lambda: self._owned_spans(self._params, self.state))

    def _batch(self, idx, names, ty, h):
        """The compiled Batch of parameters idx with state buffers names and
        types ty (an _precision.Types)."""
        spec = self.spec
        keys = ((_precision.MASTER if ty.master else None, None)
                + tuple(n if n in names else None for n in spec.kernel_buffers))
        objs, states = [], []
        for i in idx:
            st = self.state[i]
            states.append(st)
            objs += [st[keys[0]] if keys[0] else self._params[i], None]
            objs += [st[k] if k else None for k in keys[2:]]
        ptrs = [0 if a is None else _address(a) for a in objs]
        nbytes = [0 if a is None else a.nbytes for a in objs]
        b = _kernels.Batch(_kernels.KIND_NUMPY, spec.code, _DTYPE_CODE[np.dtype(ty.compute)],
                           keys, objs, states, ptrs, nbytes, [self._params[i].size for i in idx],
                           index=list(idx))
        if ty.staged:
            compute, storage, stochastic, mirror = _precision.storage_codes(
                ty, len(keys), spec.kernel_buffers)
            staging = _kernels.Staging(compute, storage, stochastic, mirror,
                                       ty.stochastic and ty.master, h["seed"], array_ids=idx)
            # aux arrays: the master's 16-bit parameter (""), an int8 buffer's absmax
            q8 = ty.state == _precision.INT8
            akeys = (("" if ty.master else None, None)
                     + tuple(_precision.absmax_key(k) if k and q8 else None for k in keys[2:]))
            aobjs = None
            if ty.master or q8:
                aobjs = []
                for i in idx:
                    aobjs += [self._params[i] if k == "" else self.state[i][k] if k else None
                              for k in akeys]
            b.stage(staging, _precision.numpy_dtype(ty.grad),
                    akeys if aobjs is not None else None, aobjs)
        return b


class _Entry(_base.Optimizer):
    """An algorithm with its own C entry point (Adafactor: a reduction pass,
    then the update): one call per parameter, every step from the general
    path, which validates every array (the state buffers against the shapes
    the algorithm gives them) before the first call."""

    _sumsq = _sumsq

    def _apply(self, grads, snaps, resolved, batches, scale=None):
        if scale is not None:  # unscaled, clipped copies (not fused into this entry)
            with np.errstate(all="ignore"):
                grads = [None if g is None else _amp.unscaled(g, *scale[:2]) for g in grads]
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
