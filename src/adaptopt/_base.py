"""The NumPy front end: param groups, state, validation and ``state_dict``.

:class:`Optimizer` is shared by the reference classes (``adaptopt.reference``,
which update each array with the algorithm's NumPy step) and the fast ones
(``adaptopt``, which hand batches to the compiled engine).  Both validate
in the same place, so they raise the same errors.

``param_groups`` and ``state`` are the source of truth, as in torch.optim:
every step works from what they hold at that moment.  A parameter or state
buffer replaced by the user is used if it is valid and rejected with an
error naming it if not; a parameter moved to another position (a group
deleted, a list reordered) keeps its state.  Everything a call can reject
is checked before anything changes, so a failing call leaves parameters,
state and gradients exactly as they were.
"""

import copy
import math
import numbers
import threading

import numpy as np

from . import _amp, _engine, _kernels, _precision, _quant
from ._config import resolve_threads
from ._precision import INT8, MASTER, absmax_key

__all__ = ["Optimizer"]


def _supported():
    out = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)]
    try:
        out.append(_precision.numpy_dtype("bfloat16"))
    except ImportError:  # ml_dtypes is optional: without it there is no NumPy bfloat16
        pass
    return tuple(out)


SUPPORTED_DTYPES = _supported()
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
    out = _in_layout(raw[off:], buf)
    out[...] = buf
    return out


def _in_layout(flat, p):
    """A view of the first p.size elements of the 1-D array flat with p's
    shape and element order in memory (p dense; flat's itemsize may differ)."""
    if p.flags.c_contiguous:
        return flat[:p.size].reshape(p.shape)
    _, low = _kernels.memory_order(p.shape, p.strides)
    start = flat[-low // p.itemsize:]
    strides = tuple(s // p.itemsize * flat.itemsize for s in p.strides)
    return np.lib.stride_tricks.as_strided(start, p.shape, strides, writeable=True)


def like(p, fill=None, dtype=None):
    """A new array with p's shape and layout (p dense: its order of
    dimensions, e.g. Fortran order or transposed, as torch's preserve_format
    keeps it), of dtype (default p's), filled with fill (None: uninitialised)."""
    out = _in_layout(np.empty(p.size, dtype=p.dtype if dtype is None else dtype), p)
    if fill is not None:
        out[...] = fill
    return out


def same_layout(a, p):
    """a has p's strides, in elements, wherever the size is > 1 (the same
    element order)."""
    return all(n < 2 or x // a.itemsize == y // p.itemsize and x % a.itemsize == 0
               for n, x, y in zip(p.shape, a.strides, p.strides))


def _describe(a):
    return (f"array of dtype {a.dtype} and shape {a.shape}" if isinstance(a, np.ndarray)
            else type(a).__name__)


def _span(a):
    """The bytes a's elements lie in: [lowest, highest + itemsize)."""
    start = a.__array_interface__["data"][0]
    if a.size == 0:
        return start, start
    lo = sum(s * (n - 1) for s, n in zip(a.strides, a.shape) if s < 0)
    hi = sum(s * (n - 1) for s, n in zip(a.strides, a.shape) if s > 0)
    return start + lo, start + hi + a.itemsize


def check_param(name, p, dense=True):
    """A parameter the kernels can update in place: dense (any order of
    dimensions; dense=False: C-contiguous), aligned, writeable."""
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {_describe(p)}")
    if p.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has unsupported dtype {p.dtype}: adaptopt updates "
                        "native-endian float32, float64, float16 and bfloat16 (ml_dtypes) "
                        "arrays")
    if not dense and not p.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (no silent copy is made); "
                         "use np.ascontiguousarray and pass the copy")
    if not _kernels.is_dense(p.shape, p.strides, p.itemsize):
        raise ValueError(f"{name} is not dense (strides {p.strides} for shape {p.shape}): "
                         "a parameter must fill its memory, in any order of dimensions (C or "
                         "Fortran order, transposed), as it is updated in place and no copy "
                         "is made; pass np.ascontiguousarray(...) and keep the copy")
    if not p.flags.aligned:
        raise ValueError(f"{name} is not aligned to its dtype's size (e.g. a view at an odd "
                         "byte offset); pass an aligned copy")
    if not p.flags.writeable:
        raise ValueError(f"{name} is read-only: parameters are updated in place")
    return p


def check_absmax(name, a, p):
    """An 8-bit buffer's absmax: float32, one value per 256 elements of p, C-contiguous,
    aligned, writeable."""
    n = _quant.n_blocks(p.size)
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != (n,):
        raise ValueError(f"{name} must be a float32 array of shape ({n},) (one absmax per "
                         f"256 elements), got {_describe(a)}")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only: state buffers are updated in place")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(f"{name} must be C-contiguous and aligned")
    return a


def check_buffer(name, b, p, dtype=None):
    """A state buffer the kernel may write: p's shape and layout (strides, in
    elements), the dtype (default p's), aligned, writeable."""
    dtype = p.dtype if dtype is None else dtype
    if not isinstance(b, np.ndarray) or b.dtype != dtype or b.shape != p.shape:
        raise ValueError(f"{name} must be an array of dtype {dtype} and shape {p.shape}, "
                         f"got {_describe(b)}")
    if not b.flags.writeable:
        raise ValueError(f"{name} is read-only: state buffers are updated in place")
    if not (same_layout(b, p) and b.flags.aligned):
        raise ValueError(f"{name} must be an aligned array with the parameter's strides "
                         f"{p.strides} (the same element order in memory: it is updated in "
                         f"place), got strides {b.strides}, aligned={b.flags.aligned}")


def as_array(name, g):
    """g as a NumPy array without a copy: anything np.asarray views in place
    (a jax array on the CPU, a memoryview or other buffer-protocol object,
    an object with __array__ or __array_interface__); else TypeError."""
    try:
        a = np.asarray(g, copy=False)
    except Exception as e:  # a copy would be needed, or g is no array at all
        raise TypeError(f"{name} must be a NumPy array or None (or an object that np.asarray "
                        "views without a copy: buffer protocol, __array__, __array_interface__"
                        f"), got {_describe(g)} ({type(e).__name__}: {e})") from None
    if a.dtype == object:
        raise TypeError(f"{name} must hold floating-point numbers, got {_describe(g)}")
    return a


def as_arrays(grads):
    """grads with every entry that is neither None nor an ndarray made an
    array by as_array (the same list when there is none)."""
    if all(g is None or type(g) is np.ndarray for g in grads):
        return grads
    return [g if g is None or isinstance(g, np.ndarray) else as_array(f"grads[{i}]", g)
            for i, g in enumerate(grads)]


def check_step(name, step):
    """A state's step count: a whole number >= 0 (NumPy scalars accepted)."""
    step = step.item() if isinstance(step, (np.ndarray, np.generic)) and step.size == 1 else step
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not (
            math.isfinite(step) and step >= 0 and float(step).is_integer()):
        raise ValueError(f"{name} must be a finite non-negative whole number, got {step!r}")
    return int(step)


def check_real(name, v):
    """A finite real number (a 1-element array accepted), as a float."""
    v = v.item() if isinstance(v, (np.ndarray, np.generic)) and v.size == 1 else v
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {v!r}")
    return float(v)


class Optimizer:
    """Base class: param groups, state and validation; not used directly."""

    spec = None        # the algorithm's Spec (adaptopt._spec)

    def __init__(self, params, defaults, n_threads=None):
        resolve_threads(n_threads)
        self.defaults = self.spec.checked(dict(defaults), type(self).__name__)
        self.n_threads = n_threads
        self.param_groups = []
        self.state = {}
        self._lock = threading.RLock()
        self._params = []
        self._layout = None          # what the last validated step saw (see _layout_now)
        self._snaps = {}
        self._plans = {}
        self._last = None            # the plan of the last fast step
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
        for k in ("_lock", "_snaps", "_plans", "_layout", "_last"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._snaps, self._plans, self._layout, self._last = {}, {}, None, None

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v!r}" for k, v in g.items() if k != "params"]
        return "\n".join(lines + [")"])

    # --- groups
    def add_param_group(self, group):
        """Add a dict ``{"params": [...], hyperparameter: value, ...}``.

        Missing hyperparameters are taken from ``defaults``; everything is
        checked first (a failure adds nothing)."""
        with self._lock:
            saved = self.state, self._params, self._layout
            try:
                self._add_param_group(group)
            except BaseException:  # nothing changes: not even where state moved
                self.state, self._params, self._layout = saved
                self._plans.clear()
                self._last = None
                raise

    def _add_param_group(self, group):
        params = self._sync()  # the current parameters, validated
        if not isinstance(group, dict):
            raise TypeError(f"param group must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError("param group has no 'params' entry")
        new = group["params"]
        new = [new] if isinstance(new, np.ndarray) else list(new)
        if not new:
            raise ValueError("param group 'params' is empty")
        base = len(params)
        for k, p in enumerate(new):
            check_param(f"params[{base + k}]", p, not self.spec.entry)
        group = {**self.defaults, **group, "params": new}
        self.spec.checked(group, type(self).__name__)
        self._owned_spans(params + new, self.state)  # no array may overlap another
        self.param_groups.append(group)
        try:
            self._sync()
        except BaseException:
            self.param_groups.pop()
            raise
        if self.spec.eager_state:  # torch's Adagrad makes its state here
            h = self.spec.checked(group, type(self).__name__)
            for i in range(base, base + len(new)):
                self._ensure_state(i, h)

    # --- the structure: which parameters there are, and in which order
    def _sync(self):
        """The flat list of parameters param_groups holds now, validated.

        When the groups or their lists were edited since the last call,
        state follows its parameter: a parameter that moved keeps its state
        under its new position, and the state of one no longer there is
        dropped.  Raises (changing nothing) if a group or parameter is invalid."""
        layout = self._layout
        groups = self.param_groups
        if layout is not None and _engine.same_layout(layout, groups):
            return self._params
        if not isinstance(groups, list):
            raise TypeError(f"param_groups must be a list of dicts, got {type(groups).__name__}")
        params = []
        for gi, g in enumerate(groups):
            if not isinstance(g, dict) or not isinstance(g.get("params"), list):
                raise TypeError(f"param_groups[{gi}] must be a dict whose 'params' is a list")
            for p in g["params"]:
                check_param(f"params[{len(params)}]", p, not self.spec.entry)
                params.append(p)
        self._owned_spans(params, {})  # parameters must not overlap
        if not isinstance(self.state, dict):
            raise TypeError(f"state must be a dict, got {type(self.state).__name__}")
        old = self._params
        if layout is not None and len(params) == len(old) and all(
                a is b for a, b in zip(params, old)):
            pass  # the same parameters in the same order: nothing moves
        elif old:
            self.state = remap_state(self.state, old, params)
        self._params = params
        self._layout = _engine.layout_of(groups)
        self._plans.clear()
        self._last = None
        return params

    def _owned_spans(self, params, state, used=None):
        """The memory the optimizer writes, sorted (an _engine.Spans);
        ValueError naming two arrays that overlap.  used: {index: buffer
        names} a step writes (None: every array in state)."""
        seen = {}
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(f"params[{seen[id(p)]}] and params[{i}] share memory "
                                 "(the same array twice)")
            seen[id(p)] = i
        spans = [_span(p) + (f"params[{i}]", p) for i, p in enumerate(params)]
        for i, st in state.items():
            if isinstance(st, dict) and (used is None or i in used):
                spans += [_span(b) + (f"state[{i}][{k!r}]", b) for k, b in st.items()
                          if isinstance(b, np.ndarray) and (used is None or k in used[i])]
        return _engine.sorted_spans(spans)

    # --- one step
    def step(self, grads, grad_scale=None, max_grad_norm=None):
        """Update every parameter whose gradient is not None, in place.

        ``grads`` has one entry per parameter, in the order the parameters
        are held (over all groups).  Thread-safe: concurrent calls on one
        optimizer are serialised by a lock.

        Parameters
        ----------
        grads : list or tuple of ndarray or None
            One gradient per parameter (None: that parameter is not updated);
            never written.
        grad_scale : float, optional
            The loss scale the gradients were multiplied by (mixed-precision
            training): the update uses ``g / grad_scale``, divided on the fly.
        max_grad_norm : float, optional
            Clip the global 2-norm of the (unscaled) gradients of the step to
            this value, as ``torch.nn.utils.clip_grad_norm_`` defines it: the
            update uses ``g * coef``, ``coef = max_grad_norm / (norm + 1e-6)``
            when that is < 1.

        Returns
        -------
        StepResult or None
            None when neither ``grad_scale`` nor ``max_grad_norm`` is given
            (the gradients are then used as they are: an inf or NaN
            propagates into the parameter, as in torch).  Otherwise
            ``StepResult(norm, stepped)``: the global norm of the unscaled
            gradients (one fused reduction pass over them, float64, bitwise
            the same for any thread count and SIMD path) and whether the
            step was taken.  A gradient holding an inf or NaN anywhere (a
            norm that is not finite) skips the step: parameters, state and
            step counts are left exactly as they were.  The norm's definition
            and precision: the user guide's *Mixed precision and clipping*.
        """
        if grad_scale is None and max_grad_norm is None:
            with self._lock:
                if not self._step_fast(grads):
                    self._step_general(grads)
            return None
        scale, max_norm = _amp.check_scale(grad_scale), _amp.check_max_norm(max_grad_norm)
        with self._lock:
            present = self._checked_for_amp(grads)
            norm, stepped, div, mul = _amp.scalars(self._sumsq(present), scale, max_norm)
            if stepped:
                self._step_scaled(grads, div, mul)
            return _amp.StepResult(norm, stepped)

    def _checked_for_amp(self, grads):
        """The gradients that are not None, once everything a step with grads
        would use is valid (raises, changing nothing, if not)."""
        if not self._fast_valid(grads):
            saved = self.state, self._params, self._layout
            try:
                self._validate(grads)
            except BaseException:
                self.state, self._params, self._layout = saved
                self._plans.clear()
                self._last = None
                raise
        return [g for g in grads if g is not None]

    def _fast_valid(self, grads):
        """True when a cached plan proves grads valid (compiled checks)."""
        return False

    def _sumsq(self, grads):
        """The sum of squares of every element of grads (see _amp.sumsq)."""
        return _amp.sumsq(grads)

    def _step_scaled(self, grads, div, mul):
        """The step with each gradient g used as g / div (div 0: not divided)
        * mul, in the step's compute type (_apply's scale)."""
        scale = (div, mul, False) if div or mul != 1.0 else None
        if not self._step_fast(grads, scale):
            self._step_general(grads, scale)

    def step_rows(self, param_index, rows, row_grads, exact=False):
        """Update only the given rows of a 2-D parameter (an embedding table).

        One call is one step of that parameter (its ``state['step']`` counts
        on); see :doc:`/rows` for the semantics.

        Parameters
        ----------
        param_index : int
            The parameter's position (over all groups), as in ``step``.
        rows : array_like of int, shape (n,)
            Row indices, in any order, ``0 <= rows[j] < n_rows``; a row given
            more than once gets the sum of its gradient rows, added left to
            right in the order given.
        row_grads : ndarray, shape (n, n_cols)
            ``row_grads[j]`` is the gradient of row ``rows[j]``; the
            parameter's dtype, C-contiguous; never written.
        exact : bool, default False
            False (lazy, as torch.optim.SparseAdam): untouched rows and their
            state do not change.  True: a row is first caught up, in closed
            form, for the steps it skipped (moments decayed as if by zero
            gradients; momentum's movement of the parameter for SGD and
            RMSprop); the last step of each row is kept in
            ``state[i]['row_step']``.

        Raises
        ------
        TypeError, ValueError
            A bad argument (an index out of range or negative, row_grads of
            another dtype or shape, a parameter that is not 2-D, ...), named
            in the message; nothing is changed.
        """
        from . import _rows
        with self._lock:
            _rows.step_rows(self, param_index, rows, row_grads, exact)

    def _step_fast(self, grads, scale=None):
        """A shortcut for the common case; False: take the general path.
        scale: the gradients' scaling done in the kernels (_kernels.run)."""
        return False

    def _snapshot(self, gi):
        """Group gi's checked hyperparameters, re-checked when a value changed."""
        group = self.param_groups[gi]
        snap = self._snaps.get(gi)
        if snap is None or snap.group is not group or not snap.holds(group):
            snap = self._snaps[gi] = _engine.Snapshot(self.spec, group, type(self).__name__)
        return snap

    def _step_general(self, grads, scale=None):
        saved = self.state, self._params, self._layout
        try:
            plan = self._validate(grads)
        except BaseException:  # nothing changes: not even where state moved with its parameter
            self.state, self._params, self._layout = saved
            self._plans.clear()
            self._last = None
            raise
        grads, snaps, resolved, batches = plan
        for (gi, _, t, _, _), idx in batches.items():
            for i in idx:
                self._ensure_state(i, resolved[gi, t])
        self._apply(grads, snaps, resolved, batches, scale)

    def _validate(self, grads):
        """Check everything a step with grads will use; change nothing."""
        resolve_threads(self.n_threads)
        params = self._sync()
        spec = self.spec
        snaps = [self._snapshot(gi) for gi in range(len(self.param_groups))]
        grads = self._check_grads(grads, params, snaps)
        rows, base = [], 0  # (group index, parameter index, step to take)
        for gi, group in enumerate(self.param_groups):
            for i in range(base, base + len(group["params"])):
                if grads[i] is not None:
                    self._check_state(i, snaps[gi].hyper)
                    rows.append((gi, i, check_step("", self.state.get(i, {}).get("step", 0)) + 1))
            base += len(group["params"])
        resolved = {}  # schedules run before anything changes
        for gi, i, t in rows:
            if (gi, t) not in resolved:
                resolved[gi, t] = snaps[gi].resolved(t)
        batches = {}  # (group, dtype, step, scalar state, first buffers) -> indices
        for gi, i, t in rows:
            h, st = resolved[gi, t], self.state.get(i, {})
            s = {k: float(st[k]) if k in st else float(init(h))
                 for k, init in spec.scalar_state.items()} or None
            first = tuple(k for k in spec.buffers(h) if k not in st and spec.init.get(k) == "grad")
            key = (gi, (params[i].dtype, grads[i].dtype), t, tuple(s.items()) if s else None,
                   first)
            batches.setdefault(key, []).append(i)
        return grads, snaps, resolved, batches

    def _used(self, grads, snaps):
        """{parameter index: the buffers its step uses} for the parameters with a gradient."""
        used, base = {}, 0
        shaped = tuple(self.spec.entry["buffers"]) if self.spec.entry else ()
        for gi, group in enumerate(self.param_groups):
            names = self.spec.buffers(snaps[gi].hyper) + shaped + (MASTER,)
            names += tuple(absmax_key(n) for n in names)  # int8 state
            for i in range(base, base + len(group["params"])):
                if grads[i] is not None:
                    used[i] = names
            base += len(group["params"])
        return used

    def _check_grads(self, grads, params, snaps):
        if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
            raise TypeError("grads must be a list or tuple with one array (or None) per "
                            f"parameter, got {_describe(grads)}")
        if len(grads) != len(params):
            raise ValueError(f"grads has {len(grads)} entries, the optimizer has "
                             f"{len(params)} parameters")
        for i, st in self.state.items():  # the state the step will read must be dicts
            if not isinstance(st, dict):
                raise TypeError(f"state[{i}] must be a dict, got {type(st).__name__}")
        spans = self._owned_spans(params, self.state, self._used(grads, snaps))
        group_of = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]
        grads = list(grads)  # arrays made from other objects replace them here, not in the caller's
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                g = grads[i] = as_array(f"grads[{i}]", g)
            if g.dtype != p.dtype:
                if g.dtype not in SUPPORTED_DTYPES:
                    raise TypeError(f"grads[{i}] has dtype {g.dtype}, params[{i}] has "
                                    f"{p.dtype}: no silent cast is made")
                _precision.types(_precision.name_of(p.dtype), _precision.name_of(g.dtype),
                                 snaps[group_of[i]].hyper, f"grads[{i}]",
                                 pwhere=f"params[{i}]")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, params[{i}] has {p.shape}")
            if self.spec.entry and not g.flags.c_contiguous:
                raise ValueError(f"grads[{i}] must be C-contiguous (no silent copy is made)")
            if not g.flags.aligned:
                raise ValueError(f"grads[{i}] is not aligned to its dtype's size; pass an "
                                 "aligned copy")
            hit = spans.find(*_span(g))
            if hit is not None:
                raise ValueError(f"grads[{i}] shares memory with {hit}: "
                                 "pass a separate gradient array")
        return grads

    def _check_state(self, i, h):
        """The state of parameter i, as the next step would use it: valid or an error."""
        if i not in self.state:
            return
        st = self.state[i]
        where = f"state[{i}]"
        if not isinstance(st, dict):
            raise TypeError(f"{where} must be a dict, got {type(st).__name__}")
        p = self._params[i]
        if "step" in st:
            check_step(f"{where}['step']", st["step"])
        elif any(k in st for k in self.spec.all_buffers):
            raise ValueError(f"{where} has buffers but no 'step'")
        ty = self._types(p, h)
        sdt = _precision.numpy_dtype(ty.state)
        for k in self.spec.buffers(h):
            if k in st:
                check_buffer(f"{where}[{k!r}]", st[k], p, sdt)
                if ty.state == INT8:
                    check_absmax(f"{where}[{absmax_key(k)!r}]", st.get(absmax_key(k)), p)
        if MASTER in st:
            check_buffer(f"{where}[{MASTER!r}]", st[MASTER], p, np.dtype(np.float32))
        elif ty.master and st.get("step", 0):
            raise ValueError(f"{where} is missing {MASTER!r} (master_weights=True, step "
                             f"{st['step']})")
        if self.spec.state_shapes is not None:  # buffers of other shapes (Adafactor's)
            for k, shape in self.spec.state_shapes(p.shape).items():
                if k in st:
                    check_buffer(f"{where}[{k!r}]", st[k], np.empty(shape, p.dtype))
        if st.get("step", 0):
            missing = [k for k in self.spec.required(h) if k not in st]
            if missing:
                raise ValueError(f"{where} is missing {missing} (step {st['step']}): a stepped "
                                 "state has them")
        for k in self.spec.scalar_state:
            if k in st:
                check_real(f"{where}[{k!r}]", st[k])

    def _types(self, p, h, g=None):
        """The types of a step of p (an _precision.Types)."""
        return _precision.types(_precision.name_of(p.dtype),
                                None if g is None else _precision.name_of(g.dtype), h,
                                size=p.size, c_order=p.flags.c_contiguous)

    def _ensure_state(self, i, h):
        """Create parameter i's missing state, as torch does (lazily): the step
        count, the buffers (but those made from the first gradient), the
        scalar state, a master weight."""
        st = self.state.setdefault(i, {})
        st["step"] = check_step(f"state[{i}]['step']", st.get("step", 0))
        p = self._params[i]
        ty = self._types(p, h) if self.spec.entry is None else None
        sdt = p.dtype if ty is None else _precision.numpy_dtype(ty.state)
        if ty is not None and ty.master and MASTER not in st:
            st[MASTER] = like(p, p, np.float32)
        for name in self.spec.buffers(h):
            init = self.spec.init.get(name)
            if name in st or init == "grad":
                continue
            if ty is not None and ty.state == INT8:
                codes, absmax = _quant.quantize(
                    np.full(p.shape, init(h) if init is not None else 0, np.float32),
                    _precision.is_signed(name))
                st[name] = staggered_copy(codes, 1 + sum(isinstance(v, np.ndarray)
                                                         for v in st.values()))
                st[absmax_key(name)] = absmax
                continue
            buf = like(p, init(h) if init is not None else 0, sdt)
            st[name] = staggered_copy(buf, 1 + sum(isinstance(v, np.ndarray) for v in st.values()))
        for name, init in self.spec.scalar_state.items():
            st[name] = float(st[name]) if name in st else float(init(h))
        if self.spec.state_shapes is not None:
            for name, shape in self.spec.state_shapes(p.shape).items():
                if name not in st:
                    st[name] = np.zeros(shape, dtype=p.dtype)

    def _apply(self, grads, snaps, resolved, batches, scale=None):
        """Update the batches: {(group, dtype, t, scalar state, first buffers): indices};
        scale: None, or (div, mul, writeback): each gradient used as g / div
        (0: not divided) * mul, in the compute type (writeback: never here)."""
        raise NotImplementedError

    # --- state_dict
    def state_dict(self, dequantize=False):
        """Plain data in torch's layout; buffers are copies.

        dequantize: low-precision state buffers (int8 codes with their
        absmax, bfloat16, float16) are given as float32 arrays (no absmax
        keys), a state torch.optim and a float32 adaptopt optimizer load."""
        with self._lock:
            self._sync()
            groups, base = [], 0
            for g in self.param_groups:
                n = len(g["params"])
                groups.append({**{k: v for k, v in g.items() if k != "params"},
                               "params": list(range(base, base + n))})
                base += n
            state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                         for k, v in st.items()} for i, st in self.state.items()}
            if dequantize:
                state = {i: _precision.dequantized(st, self.spec.all_buffers)
                         for i, st in state.items()}
            return {"state": state, "param_groups": copy.deepcopy(groups)}

    def load_state_dict(self, state_dict):
        """Replace hyperparameters and state; validated first, atomic.

        Buffers are copied, so the state_dict stays independent of the
        optimizer."""
        with self._lock:
            self._sync()
            groups, state = self._check_state_dict(state_dict)
            for g, new in zip(self.param_groups, groups):
                g.update(new)
            self.state = state

    def save(self, path):
        """Write a checkpoint (.npz, crash-safe, no pickle) of state_dict() to path."""
        from . import _checkpoint
        with self._lock:
            _checkpoint.save(self, path)

    def load(self, path):
        """Load a checkpoint written by save(); ValueError if invalid, nothing changed."""
        from . import _checkpoint
        with self._lock:
            self.load_state_dict(_checkpoint.read(path, type(self).__name__, self._sync()))

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
            s = {k: v for k, v in s.items() if k != "param_names"}
            missing = set(self.spec.hyper) - set(s)
            if missing:
                raise ValueError(f"{where} is missing {sorted(missing)}")
            try:
                hyper = self.spec.checked({**s, "params": g["params"]}, type(self).__name__)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from None
            groups.append({k: s[k] for k in hyper})
            hypers += [hyper] * n
            base += n
        raw = sd["state"]
        if not isinstance(raw, dict):
            raise ValueError("state_dict['state'] must be a dict")
        state = {}
        from . import _rows
        known = ({"step", MASTER} | set(self.spec.all_buffers) | set(self.spec.scalar_state)
                 | set(_rows.STATE_KEYS) | {absmax_key(k) for k in self.spec.all_buffers})
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
            step = check_step(f"{where}['step']", st["step"])
            if step > 0:
                missing = set(self.spec.required(hypers[i])) - set(st)
                if missing:
                    raise ValueError(f"{where} is missing {sorted(missing)} (step {step})")
            p = self._params[i]
            ty = self._types(p, hypers[i]) if self.spec.entry is None else None
            clean = {"step": step}
            if ty is not None:  # int8 <-> float buffers: quantised / dequantised on load
                st = _precision.converted(st, self.spec.all_buffers, ty, p, where)
            for k, v in st.items():
                if k == "step":
                    continue
                if ty is not None and ty.state == INT8 and k.endswith("_absmax"):
                    clean[k] = np.array(check_absmax(f"{where}[{k!r}]", v, p), copy=True)
                    continue
                if k in self.spec.scalar_state:
                    clean[k] = check_real(f"{where}[{k!r}]", v)
                    continue
                if k in _rows.STATE_KEYS:
                    clean[k] = _rows.check_loaded(where, k, v, p)
                    continue
                dt = (p.dtype if ty is None else np.dtype(np.float32) if k == MASTER
                      else _precision.numpy_dtype(ty.state))
                if k == MASTER and (ty is None or not ty.master):
                    raise ValueError(f"{where} has {MASTER!r}, but the group does not keep "
                                     "master weights (master_weights=False or a 32/64-bit "
                                     "parameter)")
                if not isinstance(v, np.ndarray) or v.dtype != dt or v.shape != p.shape:
                    raise ValueError(f"{where}[{k!r}] must be an array of dtype {dt} and "
                                     f"shape {p.shape}, got {_describe(v)}")
                clean[k] = like(p, v, dt)  # a copy, in the parameter's layout
            state[i] = clean
        return groups, state


def remap_state(state, old, new):
    """state (keyed by position in old) keyed by position in new: an entry
    goes with its parameter (dropped with it); an entry at a position old
    did not have was made for the new layout and stays where it is."""
    where = {id(p): i for i, p in enumerate(new)}
    moved = {}
    for i, st in state.items():
        if isinstance(i, int) and 0 <= i < len(old) and id(old[i]) in where:
            moved[where[id(old[i])]] = st
    for i, st in state.items():
        if isinstance(i, int) and len(old) <= i < len(new) and i not in moved:
            moved[i] = st
    return moved


def _index(key):
    """A parameter index from an int or a string of digits (as JSON keys are)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None

