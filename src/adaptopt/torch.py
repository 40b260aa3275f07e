"""PyTorch drop-in: torch.optim optimizers over adaptopt's fused kernels.

Change one import and nothing else::

    import adaptopt.torch as optim      # was: import torch.optim as optim
    opt = optim.AdamW(model.parameters(), lr=1e-3)

``Adam``, ``AdamW``, ``Adagrad``, ``RMSprop`` and ``SGD`` subclass
``torch.optim.Optimizer`` with torch's constructor arguments and defaults
(torch 2.13), torch's ``step(closure)``, ``zero_grad``, ``param_groups``,
``add_param_group``, hooks and lr schedulers, and torch's state layout
(``self.state[p]["step"]`` a float32 0-d tensor, ``"exp_avg"``, ...), so
``state_dict()`` checkpoints move freely between ``torch.optim`` and
``adaptopt.torch``.

What differs is ``step``: the parameters of a group with the same dtype and
step count are updated by ONE call into adaptopt's C kernels, in place, in a
single pass over memory (p, grad and state read once, p and state written
once), with torch's single-tensor operation order (``foreach=False``);
results are within a few ULP of torch's per step.  The table of data
addresses a kernel call needs is cached and reused while the parameters and
their state tensors stay the same objects at the same addresses.

Supported: CPU, strided, contiguous float32/float64 parameters and gradients.
Anything else (CUDA and other devices, sparse gradients, complex, half or
bfloat16 dtypes, non-contiguous tensors, a gradient of another dtype or shape
or sharing memory with what the step writes) raises ``TypeError`` or
``ValueError`` naming the parameter and what to use instead, before anything
is modified.  ``foreach`` and ``fused`` are accepted with any value (the
fused kernel runs either way); ``capturable=True`` (CUDA graphs) and
``differentiable=True`` (autograd through the step) are rejected.
"""

try:
    import torch
except ImportError as e:  # not installed, or blocked (sys.modules["torch"] = None)
    raise ImportError(
        "adaptopt.torch needs PyTorch, which could not be imported "
        f"({e}). Install it with: pip install 'adaptopt[torch]' (or pip install torch). "
        "The NumPy optimizers (adaptopt.Adam, ...) work without it.") from e

import bisect
import numbers

import numpy as np
from torch.optim import Optimizer
from torch.optim.optimizer import _use_grad_for_differentiable

from . import _kernels, optim
from ._config import resolve_threads

__all__ = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"]

_DTYPE_CODE = {torch.float32: 0, torch.float64: 1}
_STEP_DTYPES = (torch.float32, torch.float64)


def _scalar_dtype(fused=None):
    """torch.optim.optimizer._get_scalar_dtype: the dtype of state['step']."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


# --------------------------------------------------------------------------
# hyperparameters: torch's checks, run at construction, add_param_group,
# load_state_dict and every step (a group may be edited in between)
def _real(where, key, value, lo=0.0, hi=None):
    """A real number (or 1-element tensor) as a float, lo <= value (< hi)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{where}Tensor {key} must be 1-element, "
                             f"got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}{key} must be a real number, got {value!r}")
    value = float(value)
    if not value >= lo or (hi is not None and not value < hi):  # also catches NaN
        bound = f"in [{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"{where}invalid {key} value: {value!r} (must be {bound})")
    return value


def _torch_checks(nan_ok=False, **values):
    """torch.optim's constructor checks, in its order and words: a tensor lr
    has one element; each value is >= 0 ("Invalid learning rate: ...",
    "Invalid <name> value: ...").  nan_ok: the check is value < 0, as in
    torch's SGD, which lets NaN through to the step's checks."""
    lr = values.get("lr")
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    for name, value in values.items():
        if (value < 0.0) if nan_ok else not 0.0 <= value:
            label = {"lr": "learning rate", "eps": "epsilon value"}.get(name, f"{name} value")
            raise ValueError(f"Invalid {label}: {value}")


def _check_flags(cls, group, where=""):
    """foreach / fused / capturable / differentiable: what makes sense on CPU."""
    name = cls._torch_name
    for key in ("foreach", "fused"):
        v = group.get(key)
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{where}{key} must be None, True or False, got {v!r}")
    if group.get("foreach") and group.get("fused"):
        raise ValueError(f"{where}`fused` and `foreach` cannot be `True` together.")
    if group.get("capturable"):
        raise ValueError(
            f"{where}capturable=True is not supported by adaptopt.torch.{name}: it is for "
            "CUDA/XPU graph capture, and adaptopt.torch updates CPU tensors; use "
            f"capturable=False, or torch.optim.{name}(..., capturable=True) on the GPU")
    if group.get("differentiable"):
        raise ValueError(
            f"{where}differentiable=True is not supported by adaptopt.torch.{name}: the "
            "fused kernels update tensors in place outside autograd; use "
            f"torch.optim.{name}(..., differentiable=True)")


# --------------------------------------------------------------------------
# tensors: what the kernels accept, with messages that say what to do instead
def _where(group, gi, k, p):
    names = group.get("param_names")
    label = f"param_groups[{gi}]['params'][{k}]"
    if names is not None and k < len(names):
        label = f"parameter {names[k]!r} ({label})"
    return f"{label} (shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"


def _param_problem(cls, p, where):
    """The error for a parameter the kernels cannot update, or None."""
    name = cls._torch_name
    if not isinstance(p, torch.Tensor):
        return TypeError(f"{where}: optimizer can only optimize Tensors, got {type(p).__name__}")
    if p.layout is not torch.strided:
        return TypeError(f"{where} has layout {p.layout}: adaptopt.torch updates dense "
                         f"(strided) tensors; use torch.optim.{name}")
    if p.device.type != "cpu":
        alt = (f"torch.optim.{name}(..., fused=True)" if cls._torch_fused
               else f"torch.optim.{name}(..., foreach=True)")
        return ValueError(f"{where} is on device {p.device}: adaptopt.torch.{name} updates CPU "
                          f"tensors only; use {alt} for {p.device.type} parameters, or keep "
                          "the model on the CPU")
    if p.dtype not in _DTYPE_CODE:
        if p.is_complex():
            why = "complex parameters are not supported"
        elif p.dtype in (torch.float16, torch.bfloat16):
            why = ("half precision is not supported; keep float32 parameters (autocast "
                   "the forward pass with torch.autocast for low-precision compute)")
        else:
            why = "only float32 and float64 parameters are supported"
        return TypeError(f"{where}: {why}; use torch.optim.{name} for {p.dtype} parameters")
    if not p.is_contiguous():
        return ValueError(f"{where} is not contiguous (strides {p.stride()}): the kernels "
                          "update the parameter's memory in place and no copy is made; make it "
                          "contiguous before creating the optimizer (p.data = p.data.contiguous()) "
                          f"or use torch.optim.{name}")
    return None


def _grad_problem(cls, p, g, where):
    """The error for a gradient the kernels cannot read, or None."""
    name = cls._torch_name
    if g.layout is not torch.strided:
        return TypeError(f"the gradient of {where} is sparse ({g.layout}): adaptopt.torch.{name} "
                         f"needs dense gradients; {cls._sparse_advice}")
    if g.device.type != "cpu":
        return ValueError(f"the gradient of {where} is on device {g.device}: adaptopt.torch "
                          "updates CPU tensors only")
    if g.dtype is not p.dtype:
        return TypeError(f"the gradient of {where} has dtype {g.dtype}, the parameter "
                         f"{p.dtype}: no silent cast is made; give the gradient the "
                         "parameter's dtype")
    if g.shape != p.shape:
        return ValueError(f"the gradient of {where} has shape {tuple(g.shape)}, the parameter "
                          f"{tuple(p.shape)}")
    if not g.is_contiguous():
        return ValueError(f"the gradient of {where} is not contiguous (strides {g.stride()}): "
                          "no copy is made; make it contiguous (p.grad = p.grad.contiguous()) "
                          f"or use torch.optim.{name}")
    return None


def _span(t):
    start = t.data_ptr()
    return start, start + t.numel() * t.element_size()


def _no_overlap(spans, what, label):
    """spans: (start, end, tag) of memory one step writes; sorted, non-empty, back.

    label(tag) names a span; it is only called for the error message.
    """
    spans = sorted((s for s in spans if s[1] > s[0]), key=lambda s: s[:2])
    for (s0, e0, a), (s1, e1, b) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ValueError(f"{label(a)} and {label(b)} share memory: {what}")
    return spans


class _Batch:
    """The tensors of one group with one dtype: a kernel pointer table.

    ptr2d[r] holds the data addresses of row r's buffers in the kernel's
    order (column 1, the gradient, is refilled every step).  The rows'
    ``state['step']`` tensors are 0-d views of one tensor per param group
    (see ``_step_pack``); ``steps`` is its NumPy view and ``step_idx`` the
    rows' positions in it (None: all of it, in order), so reading and
    counting steps is one operation per batch, not one per parameter.
    """

    __slots__ = ("idx", "code", "ptr2d", "ptr", "sizes", "offsets", "steps", "step_idx")


class _Plan:
    """Everything a group's step needs that does not change between steps.

    ``rows`` (in the order of the group's parameters with a gradient) holds
    what the table was built from: the parameter, its address, size and
    dtype, its state dict, and (key, tensor, address) of each state tensor.
    The plan is used while all of these are unchanged.
    """

    __slots__ = ("rows", "batches", "starts", "ends", "labels")


# --------------------------------------------------------------------------
class _FusedOptimizer(Optimizer):
    """Base: validation, lazy state in torch's layout, batching, the kernel calls."""

    _algo = None          # key of _kernels.ALGOS
    _nbuf = None          # buffers per array in the kernel: p, g, state...
    _has_step = True      # state['step'] (SGD has none)
    _torch_name = None    # the torch.optim class this replaces
    _torch_fused = True   # torch.optim has fused=True for it
    _sparse_advice = ""

    def __init__(self, params, defaults, n_threads=None):
        resolve_threads(n_threads)
        _check_flags(type(self), defaults)
        self.n_threads = n_threads
        self._plans = {}
        self._packs = {}
        super().__init__(params, defaults)

    # --- torch's Optimizer API --------------------------------------------
    def add_param_group(self, param_group):
        """torch's add_param_group, then the parameters are checked; atomic."""
        before = len(self.param_groups)
        super().add_param_group(param_group)
        try:
            gi = len(self.param_groups) - 1
            group = self.param_groups[gi]
            where = f"param_groups[{gi}]: "
            _check_flags(type(self), group, where)
            self._hyper(group, where)
            for k, p in enumerate(group["params"]):
                if _param_problem(type(self), p, "") is not None:
                    raise _param_problem(type(self), p, _where(group, gi, k, p))
            spans = [_span(p) + ((gj, k, None),) for gj, g in enumerate(self.param_groups)
                     for k, p in enumerate(g["params"])]
            _no_overlap(spans, "each parameter is updated in place, so parameters must "
                        "not overlap (pass each tensor once)", self._label)
        except BaseException:
            del self.param_groups[before:]
            raise
        self._plans = {}

    def __getstate__(self):
        return {**super().__getstate__(), "n_threads": self.n_threads}

    def __setstate__(self, state):
        """Used by load_state_dict and unpickling: check, then adopt, the state.

        Group defaults are filled in as torch's classes do, every group and
        every parameter's state is checked (a failure changes nothing), then
        state tensors are made contiguous (a copy only where needed) and
        ``step`` is made a CPU float tensor, and cached pointer tables dropped.
        """
        groups = state.get("param_groups", [])
        per_param = state.get("state", {})
        for group in groups:
            self._group_setdefaults(group)
        fixes = []
        for gi, group in enumerate(groups):
            where = f"load_state_dict: param_groups[{gi}]: "
            _check_flags(type(self), group, where)
            self._hyper(group, where)
            for k, p in enumerate(group["params"]):
                st = per_param.get(p) if isinstance(p, torch.Tensor) else None
                if st:
                    fixes += self._check_loaded(st, p, group, f"load_state_dict: state of "
                                                f"{_where(group, gi, k, p)}")
        for st, key, value in fixes:
            st[key] = value
        super().__setstate__(state)
        self.__dict__.setdefault("n_threads", None)
        self._plans = {}
        self._packs = {}

    def _check_loaded(self, st, p, group, where):
        fixes = []
        for key in self._all_buffers:
            v = st.get(key)
            if v is None:
                continue
            if not isinstance(v, torch.Tensor) or v.shape != p.shape or v.dtype is not p.dtype:
                got = (f"tensor of shape {tuple(v.shape)} and dtype {v.dtype}"
                       if isinstance(v, torch.Tensor) else type(v).__name__)
                raise ValueError(f"{where}: {key!r} must be a tensor of the parameter's shape "
                                 f"{tuple(p.shape)} and dtype {p.dtype}, got {got}")
            if v.layout is not torch.strided or v.device.type != "cpu":
                raise ValueError(f"{where}: {key!r} must be a dense CPU tensor, got "
                                 f"layout {v.layout} on {v.device}")
            if not v.is_contiguous():
                fixes.append((st, key, v.contiguous()))
        if self._has_step and "step" in st:
            v = st["step"]
            value = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
                raise ValueError(f"{where}: 'step' must be a non-negative number, got {v!r}")
            if not (isinstance(v, torch.Tensor) and v.device.type == "cpu"
                    and v.dtype in _STEP_DTYPES and not v.requires_grad):
                fixes.append((st, "step", torch.tensor(float(value),
                                                       dtype=_scalar_dtype(group.get("fused")))))
        return fixes

    def _group_setdefaults(self, group):
        """What torch's __setstate__ fills in for checkpoints of older versions."""
        for k, v in self._setdefaults.items():
            group.setdefault(k, v)

    @_use_grad_for_differentiable
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss (called under ``torch.enable_grad()``).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Check every group before changing any, so a failing step changes nothing.
        work = [w for w in (self._prepare(gi, g) for gi, g in enumerate(self.param_groups))
                if w is not None]
        threads = resolve_threads(self.n_threads)
        for gi, group, hyper, names, key, plan, pwg, gptrs in work:
            first = None
            if plan is None:
                first = self._init_state(pwg, group, hyper, names)
                if len(self._plans) >= 64:
                    self._plans.clear()
                plan = self._plans[key] = self._build_plan(pwg, group, gi, names)
            self._run(plan, hyper, gptrs, first, threads)
        return loss

    # --- one step ------------------------------------------------------------
    def _prepare(self, gi, group):
        """Check a group for this step; nothing is modified.

        With a cached plan, one pass per parameter confirms the plan still
        holds and checks the gradient; otherwise parameters and existing
        state are checked in full first.
        """
        where = f"param_groups[{gi}]: "
        hyper = self._hyper(group, where)
        _check_flags(type(self), group, where)
        pwg = [p for p in group["params"] if p.grad is not None]
        if not pwg:
            return None
        names = self._names(hyper)
        key = (gi, names, tuple(map(id, pwg)))
        plan = self._plans.get(key)
        if plan is not None:
            gptrs = self._check_grads(gi, group, pwg, plan.starts, plan.ends, plan.labels, plan)
            if gptrs is not None:
                return gi, group, hyper, names, key, plan, pwg, gptrs
        starts, ends, labels = self._check_params(gi, group, pwg, names)
        gptrs = self._check_grads(gi, group, pwg, starts, ends, labels, None)
        return gi, group, hyper, names, key, None, pwg, gptrs

    def _check_grads(self, gi, group, pwg, starts, ends, labels, plan):
        """Gradient addresses, after checking them; None if the plan is stale."""
        state = self.state
        gptrs = []
        rows = plan.rows if plan is not None else [None] * len(pwg)
        for p, row in zip(pwg, rows):
            if row is not None:
                _, pptr, numel, dtype, st, tensors = row
                if (p.data_ptr() != pptr or p.numel() != numel or p.dtype is not dtype
                        or not p.is_contiguous() or state.get(p) is not st):
                    return None
                for k, t, tptr in tensors:
                    if st.get(k) is not t or t.data_ptr() != tptr:
                        return None
            g = p.grad
            if (g.layout is not torch.strided or not g.is_cpu or g.dtype is not p.dtype
                    or g.shape != p.shape or not g.is_contiguous()):
                raise _grad_problem(type(self), p, g, self._locate(gi, group, p))
            gp = g.data_ptr()
            ge = gp + g.numel() * g.element_size()
            k = bisect.bisect_left(starts, ge)
            if k and ends[k - 1] > gp and ge > gp:
                raise ValueError(f"the gradient of {self._locate(gi, group, p)} shares "
                                 f"memory with {self._label(labels[k - 1])}, which the step "
                                 "writes: give the parameter a separate gradient tensor")
            gptrs.append(gp)
        return gptrs

    @staticmethod
    def _locate(gi, group, p):
        """Name a parameter (error messages only: a linear search)."""
        for k, q in enumerate(group["params"]):
            if q is p:
                return _where(group, gi, k, p)
        return f"a parameter of param_groups[{gi}]"

    def _label(self, tag):
        """Name a memory span tagged (group index, index in group, state key or None)."""
        gi, k, key = tag
        group = self.param_groups[gi]
        where = _where(group, gi, k, group["params"][k])
        return where if key is None else f"state[{key!r}] of {where}"

    def _entries(self, names):
        return (("step",) if self._has_step else ()) + tuple(n for n in names if n)

    def _check_params(self, gi, group, pwg, names):
        """Full check of parameters and their existing state (no usable plan)."""
        spans = []
        index = {id(q): k for k, q in enumerate(group["params"])}
        entries = self._entries(names)
        for p in pwg:
            k = index[id(p)]
            err = _param_problem(type(self), p, "")
            if err is not None:
                raise _param_problem(type(self), p, _where(group, gi, k, p))
            spans.append(_span(p) + ((gi, k, None),))
            st = self.state.get(p) or {}
            for key in entries:
                v = st.get(key)
                if v is None:
                    continue
                if key == "step":
                    if not (isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_cpu
                            and v.dtype in _STEP_DTYPES and not v.requires_grad):
                        raise ValueError(f"{self._label((gi, k, key))} must be a 1-element "
                                         f"float32/float64 CPU tensor, got {v!r}")
                    continue
                if not (isinstance(v, torch.Tensor) and v.layout is torch.strided and v.is_cpu
                        and v.dtype is p.dtype and v.shape == p.shape and v.is_contiguous()):
                    got = (f"shape {tuple(v.shape)}, dtype {v.dtype}, device {v.device}, "
                           f"contiguous {v.is_contiguous()}" if isinstance(v, torch.Tensor)
                           else type(v).__name__)
                    raise ValueError(f"{self._label((gi, k, key))} must be a contiguous CPU "
                                     f"tensor of the parameter's shape and dtype, got {got}")
                spans.append(_span(v) + ((gi, k, key),))
        spans = _no_overlap(spans, "the step writes each of them in place, so parameters "
                            "and optimizer state must not overlap", self._label)
        return [s for s, _, _ in spans], [e for _, e, _ in spans], [w for _, _, w in spans]

    def _init_state(self, pwg, group, hyper, names):
        """Create missing state as torch does; the rows whose buffer is new (SGD)."""
        first = set()
        for i, p in enumerate(pwg):
            if not self._has_step and not any(names):
                continue  # SGD without momentum keeps no state, as torch
            st = self.state[p]
            if self._has_step and "step" not in st:
                st["step"] = torch.tensor(0.0, dtype=_scalar_dtype(group.get("fused")))
            for key in names:
                if key and st.get(key) is None:
                    st[key] = self._new_buffer(key, p, group)
                    if key == "momentum_buffer" and not self._has_step:
                        first.add(i)
        return first

    def _new_buffer(self, key, p, group):
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    def _build_plan(self, pwg, group, gi, names):
        """The pointer tables of a group's parameters with a gradient, by dtype."""
        index = {id(q): k for k, q in enumerate(group["params"])}
        by_dtype = {}
        for i, p in enumerate(pwg):
            by_dtype.setdefault(p.dtype, []).append(i)
        entries = self._entries(names)
        plan = _Plan()
        plan.batches = []
        rows = [None] * len(pwg)
        spans = []
        if self._has_step:  # once for all batches: a repack would strand earlier ones
            steps, pos = self._step_pack(gi, group, pwg)
        for dtype, idx in by_dtype.items():
            b = _Batch()
            b.code = _DTYPE_CODE[dtype]
            b.idx = None if len(idx) == len(pwg) else np.array(idx, dtype=np.intp)
            n = len(idx)
            b.ptr2d = np.zeros((n, self._nbuf), dtype=np.uint64)
            b.ptr = b.ptr2d.ravel()
            b.sizes = np.zeros(n, dtype=np.uintp)
            b.steps = b.step_idx = None
            if self._has_step:
                b.steps = steps
                step_idx = [pos[id(pwg[i])] for i in idx]
                if step_idx != list(range(len(b.steps))):
                    b.step_idx = np.array(step_idx, dtype=np.intp)
            for r, i in enumerate(idx):
                p = pwg[i]
                st = self.state.get(p)
                b.ptr2d[r, 0] = p.data_ptr()
                b.sizes[r] = p.numel()
                k = index[id(p)]
                spans.append(_span(p) + ((gi, k, None),))
                for c, key in enumerate(names, 2):
                    if key:
                        b.ptr2d[r, c] = st[key].data_ptr()
                        spans.append(_span(st[key]) + ((gi, k, key),))
                rows[i] = (p, p.data_ptr(), p.numel(), dtype, st,
                           tuple((k, st[k], st[k].data_ptr()) for k in entries))
            b.offsets = np.zeros(n + 1, dtype=np.uintp)
            np.cumsum(b.sizes, out=b.offsets[1:])
            plan.batches.append(b)
        plan.rows = rows
        spans = sorted((s for s in spans if s[1] > s[0]), key=lambda s: s[:2])
        plan.starts = [s for s, _, _ in spans]
        plan.ends = [e for _, e, _ in spans]
        plan.labels = [w for _, _, w in spans]
        return plan

    def _step_pack(self, gi, group, params):
        """The group's 'step' tensors as 0-d views of one tensor: (its NumPy view,
        {id(param): position}).

        Kept while every parameter asked for is in it with the same view;
        otherwise rebuilt from all of the group's parameters that have a step
        (values kept, the views replace the step tensors in self.state).
        """
        pack = self._packs.get(gi)
        if pack is not None:
            steps, pos, views = pack
            state = self.state
            if all(id(p) in pos and state[p]["step"] is views[pos[id(p)]] for p in params):
                return steps, pos
        members = [p for p in group["params"] if "step" in self.state.get(p, ())]
        old = [self.state[p]["step"] for p in members]
        dtypes = {t.dtype for t in old}
        dtype = dtypes.pop() if len(dtypes) == 1 else _scalar_dtype(group.get("fused"))
        base = torch.tensor([t.item() for t in old], dtype=dtype)
        views = [base[i] for i in range(len(members))]
        for p, v in zip(members, views):
            self.state[p]["step"] = v
        pos = {id(p): i for i, p in enumerate(members)}
        self._packs[gi] = (base.numpy(), pos, views)
        return base.numpy(), pos

    def _run(self, plan, hyper, gptrs, first, threads):
        algo = _kernels.ALGOS[self._algo]
        gptrs = np.array(gptrs, dtype=np.uint64)
        for b in plan.batches:
            b.ptr2d[:, 1] = gptrs if b.idx is None else gptrs[b.idx]
            n = len(b.sizes)
            # the rows' (step to take, extra flags): torch counts first, in the step's dtype
            if b.steps is None:
                new = [0] * n
            else:
                new = (b.steps + 1 if b.step_idx is None else b.steps[b.step_idx] + 1).tolist()
            extra = [0] * n
            if first:
                pos = range(n) if b.idx is None else b.idx.tolist()
                extra = [optim.FIRST if i in first else 0 for i in pos]
            keys = list(zip(new, extra))
            if keys.count(keys[0]) == n:
                calls = [(keys[0], None)]
            else:
                rows = {}
                for r, k in enumerate(keys):
                    rows.setdefault(k, []).append(r)
                calls = [(k, np.array(r, dtype=np.intp)) for k, r in rows.items()]
            for (step, flag), rows in calls:
                flags, scal = self._kernel_args(hyper, step)
                if rows is None:
                    ptr, offsets = b.ptr, b.offsets
                else:
                    ptr = b.ptr2d[rows].ravel()
                    offsets = np.zeros(len(rows) + 1, dtype=np.uintp)
                    np.cumsum(b.sizes[rows], out=offsets[1:])
                rc = _kernels.step(algo, b.code, ptr, self._nbuf, offsets,
                                   np.array(scal, dtype=np.float64), flags | flag, threads)
                if rc != _kernels.OK:
                    raise RuntimeError(f"adaptopt kernel {self._algo} failed with code {rc}")
            if b.steps is not None:
                if b.step_idx is None:
                    b.steps += 1
                else:
                    b.steps[b.step_idx] += 1


# --------------------------------------------------------------------------
def _doc(cls):
    base = getattr(torch.optim, cls._torch_name).__doc__ or ""
    return (f"torch.optim.{cls._torch_name} with adaptopt's fused CPU kernel.\n\n"
            "Same arguments, defaults, state and state_dict as torch.optim; one kernel call\n"
            "per (group, dtype, step) batch updates CPU float32/float64 contiguous tensors in\n"
            "place.  Extra keyword: n_threads (None: adaptopt's default, see\n"
            "adaptopt.set_num_threads).  torch.optim's documentation follows.\n\n" + base)


class Adam(_FusedOptimizer):
    _algo, _nbuf, _torch_name = "adam", 5, "Adam"
    _all_buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _sparse_advice = ("use torch.optim.SparseAdam for sparse gradients (e.g. "
                      "nn.Embedding(..., sparse=True)), or create the module with sparse=False")
    _setdefaults = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                    "differentiable": False, "decoupled_weight_decay": False, "fused": None}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 n_threads=None):
        _torch_checks(lr=lr, eps=eps)
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
        _torch_checks(weight_decay=weight_decay)
        betas = tuple(b.squeeze() if isinstance(b, torch.Tensor) and b.dim() else b
                      for b in betas)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable,
                    "fused": fused, "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults, n_threads)

    def _hyper(self, group, where=""):
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{where}betas must be a pair (beta1, beta2), got {betas!r}")
        return {"lr": _real(where, "lr", group["lr"]),
                "betas": (_real(where, "betas[0]", betas[0], 0.0, 1.0),
                          _real(where, "betas[1]", betas[1], 0.0, 1.0)),
                "eps": _real(where, "eps", group["eps"]),
                "weight_decay": _real(where, "weight_decay", group["weight_decay"]),
                "amsgrad": bool(group["amsgrad"]), "maximize": bool(group["maximize"]),
                "decoupled": bool(group["decoupled_weight_decay"])}

    def _names(self, hyper):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if hyper["amsgrad"] else None)

    def _kernel_args(self, hyper, step):
        return (optim.AdamW if hyper["decoupled"] else optim.Adam)._kernel_args(hyper, step)


class AdamW(Adam):
    _torch_name = "AdamW"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, n_threads=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, n_threads=n_threads)

    def _group_setdefaults(self, group):
        super()._group_setdefaults(group)
        group["decoupled_weight_decay"] = True  # as torch.optim.AdamW.__setstate__


class Adagrad(_FusedOptimizer):
    _algo, _nbuf, _torch_name = "adagrad", 3, "Adagrad"
    _all_buffers = ("sum",)
    _sparse_advice = ("torch.optim.Adagrad supports sparse gradients (e.g. "
                      "nn.Embedding(..., sparse=True)); use it, or create the module with "
                      "sparse=False")
    _setdefaults = {"foreach": None, "maximize": False, "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None,
                 n_threads=None):
        _torch_checks(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                      initial_accumulator_value=initial_accumulator_value, eps=eps)
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value,
                    "foreach": foreach, "maximize": maximize,
                    "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults, n_threads)
        # torch creates Adagrad's state here, with the constructor's accumulator value
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                st["step"] = torch.tensor(0.0, dtype=_scalar_dtype(group["fused"]))
                st["sum"] = torch.full_like(p, initial_accumulator_value,
                                            memory_format=torch.preserve_format)

    def _new_buffer(self, key, p, group):
        # torch's lazy path (parameters added later) uses the defaults' value
        return torch.full_like(p, self.defaults["initial_accumulator_value"],
                               memory_format=torch.preserve_format)

    def share_memory(self):
        """Calls tensor.share_memory_() on the state sum tensors (as torch's Adagrad)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()
        self._plans = {}

    def _hyper(self, group, where=""):
        return {"lr": _real(where, "lr", group["lr"]),
                "lr_decay": _real(where, "lr_decay", group["lr_decay"]),
                "weight_decay": _real(where, "weight_decay", group["weight_decay"]),
                "eps": _real(where, "eps", group["eps"]),
                "maximize": bool(group["maximize"])}

    def _names(self, hyper):
        return ("sum",)

    def _kernel_args(self, hyper, step):
        return optim.Adagrad._kernel_args(hyper, step)


class RMSprop(_FusedOptimizer):
    _algo, _nbuf, _torch_name, _torch_fused = "rmsprop", 5, "RMSprop", False
    _all_buffers = ("square_avg", "momentum_buffer", "grad_avg")
    _sparse_advice = "torch.optim.RMSprop does not support them either; use sparse=False"
    _setdefaults = {"momentum": 0, "centered": False, "foreach": None, "maximize": False,
                    "differentiable": False, "capturable": False}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, n_threads=None):
        _torch_checks(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps,
                    "centered": centered, "weight_decay": weight_decay,
                    "capturable": capturable, "foreach": foreach, "maximize": maximize,
                    "differentiable": differentiable}
        super().__init__(params, defaults, n_threads)

    def _hyper(self, group, where=""):
        return {"lr": _real(where, "lr", group["lr"]),
                "alpha": _real(where, "alpha", group["alpha"]),
                "eps": _real(where, "eps", group["eps"]),
                "weight_decay": _real(where, "weight_decay", group["weight_decay"]),
                "momentum": _real(where, "momentum", group["momentum"]),
                "centered": bool(group["centered"]), "maximize": bool(group["maximize"])}

    def _names(self, hyper):
        return ("square_avg", "momentum_buffer" if hyper["momentum"] > 0 else None,
                "grad_avg" if hyper["centered"] else None)

    def _kernel_args(self, hyper, step):
        return optim.RMSprop._kernel_args(hyper, step)


class SGD(_FusedOptimizer):
    _algo, _nbuf, _torch_name, _has_step = "sgd", 3, "SGD", False
    _all_buffers = ("momentum_buffer",)
    _sparse_advice = ("torch.optim.SGD supports sparse gradients (e.g. "
                      "nn.Embedding(..., sparse=True)); use it, or create the module with "
                      "sparse=False")
    _setdefaults = {"nesterov": False, "maximize": False, "foreach": None,
                    "differentiable": False, "fused": False}

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, n_threads=None):
        _torch_checks(nan_ok=True, lr=lr, momentum=momentum, weight_decay=weight_decay)
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults, n_threads)

    def _hyper(self, group, where=""):
        hyper = {"lr": _real(where, "lr", group["lr"]),
                 "momentum": _real(where, "momentum", group["momentum"]),
                 "dampening": _real(where, "dampening", group["dampening"], -float("inf")),
                 "weight_decay": _real(where, "weight_decay", group["weight_decay"]),
                 "nesterov": bool(group["nesterov"]), "maximize": bool(group["maximize"])}
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"{where}Nesterov momentum requires a momentum and zero dampening")
        return hyper

    def _names(self, hyper):
        return ("momentum_buffer" if hyper["momentum"] != 0 else None,)

    def _new_buffer(self, key, p, group):
        return torch.empty_like(p, memory_format=torch.preserve_format)  # FIRST writes it

    def _kernel_args(self, hyper, step):
        return optim.SGD._kernel_args(hyper, step)


for _cls in (Adam, AdamW, Adagrad, RMSprop, SGD):
    _cls.__doc__ = _doc(_cls)
del _cls
