"""PyTorch drop-in: torch.optim optimizers over adaptopt's fused kernels.

Change one import and nothing else::

    import adaptopt.torch as optim      # was: import torch.optim as optim
    opt = optim.AdamW(model.parameters(), lr=1e-3)

Each class subclasses its ``torch.optim`` twin (``adaptopt.torch.Adam`` is a
``torch.optim.Adam``): torch's constructor with its arguments, defaults and
checks, ``zero_grad``, ``param_groups``, ``add_param_group``, hooks, lr
schedulers and torch's state layout (``self.state[p]["step"]`` a float32
0-d tensor, ``"exp_avg"``, ...), so ``state_dict()`` checkpoints move
freely between ``torch.optim`` and ``adaptopt.torch``.

What differs is ``step``: the parameters of a group with the same dtype and
step count are updated by ONE call into adaptopt's C kernels, in place, in a
single pass over memory, with torch's single-tensor operation order
(``foreach=False``); results are within a few ULP of torch's per step.
The engine (``adaptopt._engine``) is the NumPy API's: it caches the kernel
calls with a reference to every tensor they address and re-checks, each
step in compiled code, every parameter's, state tensor's and gradient's
address, size, dtype and layout, and that ``state`` and ``param_groups``
still hold the same objects; anything else is validated in full here.

Supported: CPU float32/float64/bfloat16/float16 parameters dense in any
layout (contiguous, channels_last, transposed: state is made with the
parameter's strides) and strided gradients of any strides (expanded,
sliced: gathered by the kernel when not in the parameter's order).  16-bit
parameters: float32 arithmetic, state in the parameter's dtype as
torch.optim, or see the precision keywords state_dtype, master_weights,
stochastic_rounding, seed: README "Mixed precision".  Sparse COO gradients
(``nn.Embedding(sparse=True)``): ``SGD`` (momentum 0) and ``Adagrad`` take
them, and ``SparseAdam`` (torch.optim.SparseAdam's subclass) updates only
their rows (``adaptopt._sparse_torch``).  Anything else (CUDA and other
devices, other sparse gradients, complex dtypes, overlapping parameters, a
gradient of another dtype or shape or sharing memory with what the step
writes) raises ``TypeError`` or
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

import collections
import inspect
import numbers
import sys
import threading

import numpy as np
from torch.optim import optimizer as _optimizer_hooks

from . import _amp, _engine, _kernels, _precision, _torch_shim
from ._config import resolve_threads
from ._precision import MASTER
from .algorithms import ENTRY_SPECS, SPECS

__all__ = [s.name for s in SPECS + ENTRY_SPECS]

_DTYPE_CODE = {torch.float32: 0, torch.float64: 1}
_PARAM_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64,
                "bfloat16": torch.bfloat16, "float16": torch.float16}
# the precision options every elementwise algorithm takes (adaptopt._precision)
_PRECISION = {k: h.default for k, h in _precision._hyper().items()}
_STEP_DTYPES = (torch.float32, torch.float64)
_MAX_PLANS = 64
_torch_shim.enable()  # the per-step checks read tensors in C where libtorch allows
# torch.optim classes without fused=True on CPU: the alternative to suggest
_NO_FUSED = {"RMSprop"}
_SPARSE_ADVICE = {
    "Adam": "use adaptopt.torch.SparseAdam (or torch.optim.SparseAdam) for sparse gradients "
            "(e.g. nn.Embedding(..., sparse=True)), or create the module with sparse=False",
    "Adagrad": "torch.optim.Adagrad supports sparse gradients (e.g. nn.Embedding(..., "
               "sparse=True)); use it, or create the module with sparse=False",
    "SGD": "torch.optim.SGD supports sparse gradients (e.g. nn.Embedding(..., sparse=True)); "
           "use it, or create the module with sparse=False",
}


def _scalar_dtype(fused=None):
    """torch.optim.optimizer._get_scalar_dtype: the dtype of state['step']."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class _State(collections.defaultdict):
    """torch's ``state`` (a defaultdict(dict) keyed by parameter) that tells
    the engine when it was written: every write stores a new ``stamp``, so a
    step compares one object instead of looking up each parameter (a tensor's
    hash is a Python call)."""

    def __init__(self, *args):
        super().__init__(dict, *args)
        self.stamp = object()

    def _touch(name):
        method = getattr(collections.defaultdict, name)

        def touched(self, *args, **kwargs):
            self.stamp = object()
            return method(self, *args, **kwargs)

        touched.__name__ = name
        return touched

    for _name in ("__setitem__", "__delitem__", "__ior__", "update", "setdefault", "pop",
                  "popitem", "clear"):
        locals()[_name] = _touch(_name)
    del _name, _touch

    def __reduce__(self):
        return (_State, (), None, None, iter(self.items()))

    def __deepcopy__(self, memo):
        import copy
        out = _State()
        memo[id(self)] = out
        for k, v in self.items():
            dict.__setitem__(out, copy.deepcopy(k, memo), copy.deepcopy(v, memo))
        return out


# --------------------------------------------------------------------------
# hyperparameters: at every step (a group may be edited between steps)
def _plain(value):
    """A 1-element tensor as a Python number (torch accepts tensor lr/betas)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor hyperparameters must be 1-element, got shape "
                             f"{tuple(value.shape)}")
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


def _freeze(value):
    """A mutable hyperparameter's contents (a list, a tensor an lr scheduler
    fills in place), or None for an immutable one."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.item()) if value.numel() == 1 else ("tensor", id(value))
    if isinstance(value, list):
        return tuple(_freeze(v) or v for v in value)
    if isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return tuple(_freeze(v) or v for v in value)
    return None


def _check_flags(cls, group, where=""):
    """foreach / fused / capturable / differentiable: what makes sense on CPU."""
    name = cls.spec.torch or cls.spec.name
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


def _dense(t):
    """t fills its memory once per element, in any order of dimensions
    (torch's is_non_overlapping_and_dense: channels_last, transposed, ...)."""
    return _kernels.is_dense(tuple(t.shape), t.stride(), 1)


def _storage_problem(t, where):
    """The error when t's elements reach beyond its storage (the storage was
    resized in place, t.untyped_storage().resize_(...), as FSDP frees
    parameters: torch itself then reads past its end), or None."""
    t = _local(t)
    if t.numel() == 0:
        return None
    need = (t.storage_offset() + 1 + sum((n - 1) * abs(x) for n, x in zip(t.shape, t.stride())))
    have = t.untyped_storage().nbytes()
    if need * t.element_size() <= have:
        return None
    return ValueError(f"{where} has {t.numel()} elements but its storage holds only {have} "
                      f"bytes ({need * t.element_size()} needed): the storage was resized "
                      "(untyped_storage().resize_); give it back its size or a new tensor")


def _same_layout(a, p):
    """a has p's strides wherever the size is > 1 (the same element order)."""
    return all(n < 2 or x == y for n, x, y in zip(p.shape, a.stride(), p.stride()))


def _param_problem(cls, p, where, dense=True):
    """The error for a parameter the kernels cannot update, or None.  dense:
    any dense layout (else contiguous only)."""
    name = cls.spec.torch or cls.spec.name
    if not isinstance(p, torch.Tensor):
        return TypeError(f"{where}: optimizer can only optimize Tensors, got {type(p).__name__}")
    p = _local(p)
    if p.layout is not torch.strided:
        return TypeError(f"{where} has layout {p.layout}: adaptopt.torch updates dense "
                         f"(strided) tensors; use torch.optim.{name}")
    if p.device.type != "cpu":
        alt = (f"torch.optim.{name}(..., foreach=True)" if name in _NO_FUSED
               else f"torch.optim.{name}(..., fused=True)")
        return ValueError(f"{where} is on device {p.device}: adaptopt.torch.{name} updates CPU "
                          f"tensors only; use {alt} for {p.device.type} parameters, or keep "
                          "the model on the CPU")
    if p.dtype not in (_PARAM_DTYPES if cls.spec.entry is None else _DTYPE_CODE):
        if p.is_complex():
            why = "complex parameters are not supported"
        elif p.dtype in (torch.float16, torch.bfloat16):
            why = f"{name} updates float32 and float64 parameters only"
        else:
            why = "only float32, float64, bfloat16 and float16 parameters are supported"
        return TypeError(f"{where}: {why}; use torch.optim.{name} for {p.dtype} parameters")
    if not (_dense(p) if dense else p.is_contiguous()):
        what = "dense (non-overlapping, in any order of dimensions)" if dense else "contiguous"
        return ValueError(f"{where} is not {what} (strides {p.stride()}): the kernels "
                          "update the parameter's memory in place and no copy is made; make it "
                          "contiguous before creating the optimizer (p.data = p.data.contiguous()) "
                          f"or use torch.optim.{name}")
    return _storage_problem(p, where)


def _grad_problem(cls, p, g, where, strided=True):
    """The error for a gradient the kernels cannot read, or None.  strided:
    any strides (else contiguous only)."""
    name = cls.spec.torch or cls.spec.name
    kind = _same_kind(p, g)
    if kind is not None:
        return TypeError(f"the gradient of {where} is {kind}")
    p, g = _local(p), _local(g)
    if g.layout is not torch.strided:
        advice = _SPARSE_ADVICE.get(name, f"torch.optim.{name} does not support them either; "
                                          "use sparse=False")
        return TypeError(f"the gradient of {where} is sparse ({g.layout}): adaptopt.torch.{name} "
                         f"needs dense gradients; {advice}")
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
    if not strided and not g.is_contiguous():
        return ValueError(f"the gradient of {where} is not contiguous (strides {g.stride()}): "
                          "no copy is made; make it contiguous (p.grad = p.grad.contiguous()) "
                          f"or use torch.optim.{name}")
    if g.is_neg():
        return ValueError(f"the gradient of {where} is a lazily negated view (is_neg()): "
                          "materialize it (p.grad = p.grad.resolve_neg())")
    return _storage_problem(g, f"the gradient of {where}")


def _dtensor(t):
    """t is a DTensor (FSDP2's fully_shard, torch.distributed.tensor): its
    data is its local shard; None if torch.distributed.tensor is not loaded."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def _local(t):
    """A DTensor's local shard (what ``t.to_local()`` returns under no_grad),
    else t itself: the kernels update each rank's shard of a DTensor."""
    return t._local_tensor if _dtensor(t) else t


def _same_kind(p, v):
    """None if v is laid out as parameter p (both plain tensors, or DTensors
    with the same mesh and placements and local shape), else what differs."""
    if _dtensor(p) != _dtensor(v):
        return (f"a {type(v).__name__} for a {type(p).__name__} parameter (a DTensor "
                "parameter, e.g. FSDP2's, needs DTensor state of the same placements)")
    if _dtensor(p) and (v.device_mesh != p.device_mesh or v.placements != p.placements
                        or v._local_tensor.shape != p._local_tensor.shape):
        return (f"a DTensor with placements {v.placements} and local shape "
                f"{tuple(v._local_tensor.shape)}; the parameter's are {p.placements} and "
                f"{tuple(p._local_tensor.shape)}")
    return None


def _span(t):
    """The bytes t's elements lie in (torch's strides are >= 0)."""
    t = _local(t)
    start = t.data_ptr()
    if t.numel() == 0:
        return start, start
    last = sum(s * (n - 1) for s, n in zip(t.stride(), t.shape))
    return start, start + (last + 1) * t.element_size()


def _amp_args(opt):
    """GradScaler's ``grad_scale`` and ``found_inf`` (the attributes it sets
    on an optimizer that declares ``_step_supports_amp_scaling``, read as
    torch's fused optimizers read them): (scale, skip).  scale: None, or the
    kernels' (grad_div, 1, writeback): the gradients divided by grad_scale on
    the fly and the quotient left in ``.grad``, as torch's fused step does;
    skip: found_inf is set (nonzero), the step changes nothing."""
    grad_scale, found_inf = getattr(opt, "grad_scale", None), getattr(opt, "found_inf", None)
    skip = False
    if found_inf is not None:
        if isinstance(found_inf, torch.Tensor):
            if found_inf.numel() != 1:
                raise ValueError(f"found_inf must be a 1-element tensor, got shape "
                                 f"{tuple(found_inf.shape)}")
            found_inf = found_inf.item()
        if isinstance(found_inf, bool) or not isinstance(found_inf, numbers.Real):
            raise TypeError(f"found_inf must be a 1-element tensor or a number, got {found_inf!r}")
        skip = found_inf != 0
    if grad_scale is None:
        return None, skip
    if isinstance(grad_scale, torch.Tensor):
        if grad_scale.numel() != 1:
            raise ValueError(f"grad_scale must be a 1-element tensor, got shape "
                             f"{tuple(grad_scale.shape)}")
        grad_scale = grad_scale.item()
    return (_amp.check_scale(grad_scale), 1.0, True), skip


def _counters(batch, work, new_s):
    """A torch batch's scalar-state counters: its packs' expected and new values."""
    batch.packs = [pk[:4] + (work.s[pk[0]], new_s[pk[0]]) for pk in batch.packs]


# --------------------------------------------------------------------------
class _Fused:
    """Mixin over a torch.optim class: the engine's step, validation on load."""

    spec = None
    _precision_defaults = _PRECISION

    def _types(self, p, h):
        """The types of a step of p under the group's checked hyperparameters h."""
        return _precision.types(_precision.name_of(p.dtype), None, h)

    def _adaptopt_init(self, n_threads):
        self.n_threads = n_threads
        self._lock = threading.RLock()
        self._plans, self._packs, self._snaps, self._mirrors = {}, {}, {}, {}
        self._layout = self._stamp = self._last = None
        self._flat = []
        self._rows = _engine.Rows()
        self.state = _State(self.state)

    # --- torch's Optimizer API --------------------------------------------
    def add_param_group(self, param_group):
        """torch's add_param_group, then the parameters are checked; atomic."""
        before = len(self.param_groups)
        super().add_param_group(param_group)
        try:
            gi = len(self.param_groups) - 1
            group = self.param_groups[gi]
            if self.spec.entry is None:  # only options set: torch.optim's group layout
                for k, v in self._precision_defaults.items():
                    if v != _PRECISION[k]:
                        group.setdefault(k, v)
            self._check_group(group, f"param_groups[{gi}]: ")
            for k, p in enumerate(group["params"]):
                if _param_problem(type(self), p, "") is not None:
                    raise _param_problem(type(self), p, _where(group, gi, k, p))
            spans = [_span(p) + (_where(g, gj, k, p), p) for gj, g in enumerate(self.param_groups)
                     for k, p in enumerate(g["params"])]
            _engine.sorted_spans(spans, "share memory: each parameter is updated in place, so "
                                        "parameters must not overlap (pass each tensor once)")
        except BaseException:
            del self.param_groups[before:]
            raise
        if getattr(self, "_plans", None) is not None:
            self._plans.clear()
            self._last = None

    def _clean(self, group, where=""):
        """The group's hyperparameters as plain values for the Spec's checks
        (raises for an unsupported flag)."""
        _check_flags(type(self), group, where)
        try:
            clean = {k: _plain(group[k]) for k in self.spec.hyper if k in group}
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}{e}") from None
        if self.spec.entry is None:  # a group from torch.optim has no precision options
            for k, v in self._precision_defaults.items():
                clean.setdefault(k, v)
        return clean

    def _check_group(self, group, where=""):
        """The group's hyperparameters as the Spec checks them (raises)."""
        clean = self._clean(group, where)
        try:
            h = self.spec.checked(clean, type(self).__name__)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}{e}") from None
        if h.get("state_dtype") == _precision.INT8:
            raise ValueError(f"{where}state_dtype='int8' (8-bit state) is not in the torch "
                             "drop-in yet: use the NumPy API (adaptopt.Adam etc.), or "
                             "state_dtype='bfloat16'")
        return h

    def __getstate__(self):
        return {**super().__getstate__(), "n_threads": self.n_threads}

    def __setstate__(self, state):
        """Used by load_state_dict and unpickling: check, then adopt, the state.

        Group defaults are filled in as torch's classes do, every group and
        every parameter's state is checked (a failure changes nothing), then
        state tensors are made contiguous (a copy only where needed) and
        ``step`` is made a CPU float tensor, and cached plans dropped.
        """
        groups = state.get("param_groups", [])
        per_param = state.get("state", {})
        n_threads = state.get("n_threads", getattr(self, "n_threads", None))
        fixes = []
        # the groups as torch's class will fill them in (older checkpoints lack keys)
        probe = object.__new__(type(self))
        super(_Fused, probe).__setstate__({
            "param_groups": [dict(g) for g in groups], "state": {},
            "defaults": state.get("defaults", getattr(self, "defaults", {}))})
        for gi, group in enumerate(probe.param_groups):
            self._check_group(group, f"load_state_dict: param_groups[{gi}]: ")
            for k, p in enumerate(group["params"]):
                st = per_param.get(p) if isinstance(p, torch.Tensor) else None
                if st:
                    fixes += self._check_loaded(st, p, group, f"load_state_dict: state of "
                                                f"{_where(group, gi, k, p)}")
        for st, key, value in fixes:
            st[key] = value
        super().__setstate__(state)
        self._adaptopt_init(n_threads)

    def load_state_dict(self, state_dict):
        """torch's load_state_dict, keeping float32 state (master weights,
        state_dtype='float32') that torch's load casts to a 16-bit
        parameter's dtype, and with counters (``step``) of its own: torch's
        load keeps the state_dict's 0-d tensors, which the engine would count
        on in place for both optimizers."""
        super().load_state_dict(state_dict)
        saved = state_dict.get("state", {}) if isinstance(state_dict, dict) else {}
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [(g, p) for g in self.param_groups for p in g["params"]]
        with self._lock:
            for i, (group, p) in zip(ids, params):
                old, st = saved.get(i), self.state.get(p)
                if not isinstance(old, dict) or not st:
                    continue
                for key in self._counter_keys(group):  # torch's load keeps the given 0-d tensors:
                    v = st.get(key)               # the engine counts them in place
                    if isinstance(v, torch.Tensor) and v is old.get(key):
                        st[key] = v.detach().clone()
                for key, v in old.items():
                    now = st.get(key)
                    if (isinstance(v, torch.Tensor) and isinstance(now, torch.Tensor)
                            and v.dtype is torch.float32 and now.dtype is torch.float32
                            and v.shape == now.shape and v.dim() > 0):
                        now.copy_(v)  # the exact values: the cast went through p's dtype
            self._plans.clear()
            self._last = None

    def _check_loaded(self, st, p, group, where):
        fixes = []
        ty = self._types(p, self._check_group(group)) if self.spec.entry is None else None
        sdt = p.dtype if ty is None else _TORCH_DTYPE[ty.state]
        for key in self.spec.all_buffers + ((MASTER,) if ty is not None and ty.master else ()):
            v = st.get(key)
            if v is None:
                continue
            want = torch.float32 if key == MASTER else sdt
            if not isinstance(v, torch.Tensor) or v.shape != p.shape or not (
                    v.dtype is want or (ty is not None and v.is_floating_point())):
                got = (f"tensor of shape {tuple(v.shape)} and dtype {v.dtype}"
                       if isinstance(v, torch.Tensor) else type(v).__name__)
                raise ValueError(f"{where}: {key!r} must be a tensor of the parameter's shape "
                                 f"{tuple(p.shape)} and dtype {want}, got {got}")
            kind = _same_kind(p, v)
            if kind is not None:
                raise ValueError(f"{where}: {key!r} is {kind}")
            if v.layout is not torch.strided or v.device.type != "cpu":
                raise ValueError(f"{where}: {key!r} must be a dense CPU tensor, got "
                                 f"layout {v.layout} on {v.device}")
            if v.dtype is not want or not _same_layout(_local(v), _local(p)):
                # torch's load casts state to the parameter's dtype; a tensor saved
                # in another layout is copied into the parameter's
                fixes.append((st, key, torch.empty_like(p, dtype=want).copy_(v)))
        for key in self._counter_keys(group):
            if key not in st:
                continue
            v = st[key]
            value = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                    value >= 0 if key == "step" else value == value):
                raise ValueError(f"{where}: {key!r} must be a "
                                 f"{'non-negative' if key == 'step' else 'finite'} number, "
                                 f"got {v!r}")
            if not (isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.dim() == 0
                    and v.dtype in _STEP_DTYPES and not v.requires_grad):
                fixes.append((st, key, torch.tensor(float(value),
                                                    dtype=_scalar_dtype(group.get("fused")))))
        return fixes

    def _check_unscalable(self):
        """grad_scale: the unscaled gradient is written back into ``.grad``
        (torch's fused AMP), which an expanded gradient (elements sharing
        memory) cannot hold; ValueError naming it, before anything changes."""
        for gi, group in enumerate(self.param_groups):
            for k, p in enumerate(group["params"]):
                g = p.grad
                if isinstance(g, torch.Tensor) and g.layout is torch.strided and any(
                        s == 0 and n > 1 for s, n in zip(_local(g).stride(), _local(g).shape)):
                    raise ValueError(f"the gradient of {_where(group, gi, k, p)} is expanded "
                                     f"(strides {tuple(g.stride())}: elements share memory); "
                                     "with grad_scale the step writes the unscaled gradient "
                                     "back into .grad: give it its own memory "
                                     "(p.grad = p.grad.contiguous())")

    def _has_step(self, group):
        """The group's parameters count their steps in ``state["step"]``: every
        algorithm but SGD (as torch.optim), and SGD with stochastic rounding,
        whose bits are keyed by the step (one count per parameter across plans
        and checkpoints, so no two of its steps share bits)."""
        return self.spec.name != "SGD" or bool(group.get("stochastic_rounding"))

    def _counter_keys(self, group):
        """The per-parameter counters torch keeps as 0-d tensors."""
        return (("step",) if self._has_step(group) else ()) + tuple(self.spec.scalar_state)

    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss (called under ``torch.enable_grad()``).
        """
        # torch's step wrapper, without a profiler range unless a profiler runs
        if torch.autograd._profiler_enabled():
            with torch.autograd.profiler.record_function(
                    f"Optimizer.step#{type(self).__name__}.step"):
                return self._hooked_step(closure)
        return self._hooked_step(closure)

    step.hooked = True  # torch.optim.Optimizer must not wrap it again

    def _hooked_step(self, closure):
        """torch's step hooks (global and the optimizer's), around the step."""
        args, kwargs = ((self,) if closure is None else (self, closure)), {}
        pre = _optimizer_hooks._global_optimizer_pre_hooks, self._optimizer_step_pre_hooks
        for hook in (*pre[0].values(), *pre[1].values()) if pre[0] or pre[1] else ():
            result = hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(f"{type(self).step} must return None or a tuple of "
                                       f"(new_args, new_kwargs), but got {result}.")
                args, kwargs = result
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._lock:
            threads = resolve_threads(self.n_threads)
            scale, skip = _amp_args(self)
            if scale is not None:
                self._check_unscalable()
            if self._mirrors:
                self._sync_dtensors(True)
            try:
                if skip:
                    self._build(dry=True)  # the checks of a step; nothing changes
                elif not self._fast_step(threads, scale):
                    self._slow_step(threads, scale)
            finally:
                if self._mirrors:
                    self._sync_dtensors(False)
        self._optimizer_step_code()
        post = self._optimizer_step_post_hooks, _optimizer_hooks._global_optimizer_post_hooks
        for hook in (*post[0].values(), *post[1].values()) if post[0] or post[1] else ():
            hook(self, args, kwargs)
        return loss

    def _slow_step(self, threads, scale=None):
        """The step after the fast path declined: sparse gradients (SGD, Adagrad)
        by the row kernel (_sparse_torch, checked first), the rest by a plan.
        scale: GradScaler's unscaling in the kernels (dense gradients only)."""
        sparse = _sparse_torch.split(self) if self.spec.name in _sparse_torch.SPARSE_OK else []
        if sparse and scale is not None:
            raise ValueError("GradScaler's fused unscaling (grad_scale) does not take sparse "
                             "gradients: call scaler.unscale_(optimizer) before scaler.step")
        hidden = [(item["p"], item["p"].grad) for item in sparse]
        try:
            for p, _ in hidden:
                p.grad = None
            if not (hidden and self._fast_step(threads, scale)):
                self._build().step(threads, scale)
        finally:
            for p, g in hidden:
                p.grad = g
        _sparse_torch.run(self, sparse, threads)

    # --- the engine ------------------------------------------------------------
    def _fast_step(self, threads, scale=None):
        """Step from a cached plan if everything it holds is unchanged: True if it ran.
        scale: the gradients' scaling in the kernels (_kernels.run), or None."""
        state, plan = self.state, self._last
        if plan is None or type(state) is not _State or state.stamp is not self._stamp:
            return False
        groups, strided = self.param_groups, torch.strided
        done = _kernels.fast_step_torch(plan, groups, self._flat, strided, threads, scale)
        if not done:  # another subset's plan, or one whose counts other plans moved
            mask, keys = _kernels.grad_keys(self._flat)
            plan = self._plans.get(mask)
            if plan is None:  # a subset not seen before: its parameters' rows
                plan = self._rows.plan(keys, self._layout, _counters)
                if plan is None or not plan.resync(self._read_counters):
                    return False
                if not _kernels.fast_check_torch(plan, groups, strided):
                    self._rows.wanted = True
                    return False
                plan.step(threads, scale)  # never common: each row's scalars are its own
                return True
            if not plan.resync(self._read_counters):
                return False
            done = _kernels.fast_step_torch(plan, groups, self._flat, strided, threads, scale)
            if not done:
                return False
            self._last = plan
        if done == 2:
            plan.step(threads, scale)
        return True

    def _read_counters(self, batch):
        """(step to take, scalar state) shared by the batch's rows, or None."""
        now = {}
        for pk in ([("step",) + tuple(batch.step_pack)] if batch.step_pack else []) + batch.packs:
            v = _kernels.pack_value(pk[1], pk[2])
            if v is None or (pk[0] == "step" and not (v >= 0 and v % 1 == 0)):
                return None
            now[pk[0]] = v
        t = int(now.pop("step", 0)) + 1
        return t, now or None

    def _snapshot(self, gi, group):
        snap = self._snaps.get(gi)
        if snap is None or not snap.holds(group):
            where = f"param_groups[{gi}]: "
            try:
                snap = _engine.Snapshot(self.spec, group, type(self).__name__, freeze=_freeze,
                                        clean=lambda g: self._clean(g, where))
            except (TypeError, ValueError) as e:
                raise type(e)(str(e) if str(e).startswith(where) else f"{where}{e}") from None
            self._snaps[gi] = snap
        return snap

    def _build(self, dry=False):
        """Validate everything the step will touch, create missing state, and
        make (and cache) the plan.  Nothing changes before the last check;
        dry: only the checks (a skipped AMP step), returns None."""
        if type(self.state) is not _State:  # replaced by hand
            self.state = _State(self.state)
        groups = self.param_groups
        snaps = [self._snapshot(gi, g) for gi, g in enumerate(groups)]
        rows, spans = [], []  # (group index, index in group, parameter)
        for gi, group in enumerate(groups):
            for k, p in enumerate(group["params"]):
                err = _param_problem(type(self), p, "")
                if err is not None:
                    raise _param_problem(type(self), p, _where(group, gi, k, p))
                spans.append(_span(p) + (_where(group, gi, k, p), p))
                if p.grad is not None:
                    rows.append((gi, k, p))
        for gi, k, p in rows:
            spans += self._check_state(gi, k, p, snaps[gi].hyper)
        owned = _engine.sorted_spans(spans, "share memory: the step writes each of them in "
                                            "place, so parameters and optimizer state must "
                                            "not overlap")
        for gi, k, p in rows:
            err = _grad_problem(type(self), p, p.grad, _where(groups[gi], gi, k, p))
            if err is not None:
                raise err
            hit = owned.find(*_span(p.grad))
            if hit is not None:
                raise ValueError(f"the gradient of {_where(groups[gi], gi, k, p)} shares "
                                 f"memory with {hit}, which the step writes: give the "
                                 "parameter a separate gradient tensor")
        steps = {}
        for gi, k, p in rows:
            st = self.state.get(p, {})
            t = (int(st["step"].item()) if self._has_step(groups[gi]) and "step" in st else 0) + 1
            if (gi, t) not in steps:
                steps[gi, t] = snaps[gi].resolved(t)  # a schedule runs before anything changes
        if dry:
            return None
        # nothing changes above this line
        first = self._init_state(rows, steps)
        packs = {gi: self._pack(gi, group) for gi, group in enumerate(groups)}
        batches = {}
        for gi, k, p in rows:
            st = self.state[p]
            t = (int(st["step"].item()) if self._has_step(groups[gi]) else 0) + 1
            s = tuple((key, float(st[key].item())) for key in self.spec.scalar_state)
            key = (gi, p.dtype, t, s, p in first)
            batches.setdefault(key, []).append(p)
        plan = _engine.Plan(_counters)
        for (gi, dtype, t, s, is_first), ps in batches.items():
            h = steps[gi, t]
            extra = _kernels.flag_bits(self.spec.kernel, self.spec.first_flag) if is_first else 0
            b = self._batch(ps, self.spec.buffers(h), dtype, packs[gi], h)
            b.t = t
            plan.add(b, _engine.Work(snaps[gi], dict(s) or None, extra, h))
        owned = [_span(p) + ("", p) for g in groups for p in g["params"]]
        for gi, k, p in rows:
            owned += [_span(v) + ("", v) for v in self.state[p].values()
                      if isinstance(v, torch.Tensor) and v.dim() > 0]
        plan.spans = _engine.sorted_spans(owned)
        self._layout = plan.layout = _engine.layout_of(groups)
        self._flat = [p for g in groups for p in g["params"]]
        self._stamp = self.state.stamp
        if self._mirrors:
            self._sync_dtensors(True)
        if not _kernels.check_torch_all(plan.batches, plan.spans.compiled, torch.strided):
            raise RuntimeError("adaptopt: a validated step failed the engine's check")
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[_kernels.grad_mask(self._flat)] = self._last = plan
        if self._rows.wanted:
            self._refresh_rows(snaps, packs)
        return plan

    def _refresh_rows(self, snaps, packs):
        """The one-parameter rows (_engine.Rows) of every parameter whose state
        is complete and valid, made where missing or stale."""
        state, rows, new = self.state, self._rows.rows, {}

        def fresh(key, b):
            st = state.get(_kernels.row_param(b, 0))
            return (b.states[0] is st
                    and all(k is None or st.get(k) is b.objs[j] for j, k in enumerate(b.keys))
                    and (b.step_pack is None or st.get("step") is b.step_pack[2][0])
                    and all(st.get(pk[0]) is pk[3][0] for pk in b.packs))

        for gi, group in enumerate(self.param_groups):
            h = snaps[gi].hyper
            names = self.spec.buffers(h)
            for k, p in enumerate(group["params"]):
                st = state.get(p)
                r = rows.get(id(p))
                if (not st or (r is not None and fresh(id(p), r[0]))
                        or any(key not in st for key in names + self._counter_keys(group))):
                    continue
                try:
                    self._check_state(gi, k, p, h)
                except (TypeError, ValueError):
                    continue  # its own step will say what is wrong
                new[id(p)] = (self._batch([p], names, p.dtype, packs[gi], h),
                              _engine.Work(snaps[gi], None))

        def spans():
            return _engine.sorted_spans(
                [_span(p) + ("", p) for p in self._flat]
                + [_span(v) + ("", v) for p in self._flat for v in state.get(p, {}).values()
                   if isinstance(v, torch.Tensor) and v.dim() > 0])

        self._rows.refresh(self._layout, new, fresh, spans)

    def _check_state(self, gi, k, p, h):
        """Parameter p's existing state as the step would use it: its spans,
        or an error naming what is wrong."""
        group = self.param_groups[gi]
        st = self.state.get(p)
        if st is None:
            return []
        if not isinstance(st, dict):
            raise TypeError(f"the state of {_where(group, gi, k, p)} must be a dict, got "
                            f"{type(st).__name__}")
        spans = []
        for key in self._counter_keys(group):
            v = st.get(key)
            if v is None:
                continue
            if not (isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_cpu and v.dim() == 0
                    and v.dtype in _STEP_DTYPES and not v.requires_grad):
                raise ValueError(f"state[{key!r}] of {_where(group, gi, k, p)} must be a 0-d "
                                 f"float32/float64 CPU tensor, got {v!r}")
            value = v.item()
            if key == "step" and not (np.isfinite(value) and value >= 0 and value == int(value)):
                raise ValueError(f"state['step'] of {_where(group, gi, k, p)} must be a whole "
                                 f"number >= 0, got {value!r}")
            if not np.isfinite(value):
                raise ValueError(f"state[{key!r}] of {_where(group, gi, k, p)} must be finite, "
                                 f"got {value!r}")
        ty = self._types(p, h)
        sdt = _TORCH_DTYPE[ty.state]
        # no master yet (a torch.optim state loaded): _init_state makes it from p
        for key in self.spec.buffers(h) + ((MASTER,) if ty.master else ()):
            v = st.get(key)
            if v is None:
                continue
            want = torch.float32 if key == MASTER else sdt
            kind = _same_kind(p, v) if isinstance(v, torch.Tensor) else None
            if kind is not None:
                raise ValueError(f"state[{key!r}] of {_where(group, gi, k, p)} is {kind}")
            if not (isinstance(v, torch.Tensor) and v.layout is torch.strided and v.is_cpu
                    and v.dtype is want and v.shape == p.shape
                    and _same_layout(_local(v), _local(p)) and not _local(v).is_neg()):
                got = (f"shape {tuple(v.shape)}, dtype {v.dtype}, device {v.device}, "
                       f"strides {v.stride()}" if isinstance(v, torch.Tensor)
                       else type(v).__name__)
                raise ValueError(f"state[{key!r}] of {_where(group, gi, k, p)} must be a "
                                 "CPU tensor of the parameter's shape and strides "
                                 f"{p.stride()} (torch's preserve_format) and dtype {want}, "
                                 f"got {got}")
            bad = _storage_problem(v, f"state[{key!r}] of {_where(group, gi, k, p)}")
            if bad is not None:
                raise bad
            spans.append(_span(v) + (f"state[{key!r}] of {_where(group, gi, k, p)}", v))
        return spans

    def _init_state(self, rows, steps):
        """Create missing state as torch does; the parameters whose buffers
        take the first gradient (SGD's momentum)."""
        first = set()
        for gi, k, p in rows:
            group = self.param_groups[gi]
            st = self.state[p]
            t = (int(st["step"].item()) if self._has_step(group) and "step" in st else 0) + 1
            h = steps[gi, t]
            if self._has_step(group) and "step" not in st:
                st["step"] = torch.tensor(0.0, dtype=_scalar_dtype(group.get("fused")))
            for key, init in self.spec.scalar_state.items():
                if key not in st:
                    st[key] = torch.tensor(float(init(h)), dtype=_scalar_dtype(group.get("fused")))
            ty = self._types(p, h)
            sdt = _TORCH_DTYPE[ty.state]
            if ty.master and st.get(MASTER) is None:
                st[MASTER] = p.detach().to(torch.float32, memory_format=torch.preserve_format,
                                           copy=True)
            for key in self.spec.buffers(h):
                if st.get(key) is None:
                    init = self.spec.init.get(key)
                    if init == "grad":
                        first.add(p)
                        st[key] = torch.empty_like(p, dtype=sdt,
                                                   memory_format=torch.preserve_format)
                    else:
                        st[key] = self._new_buffer(key, p, sdt, h)
        return first

    def _new_buffer(self, key, p, dtype, h):
        init = self.spec.init.get(key)
        if init is None:
            return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        return torch.full_like(p, float(init(h)), dtype=dtype,
                               memory_format=torch.preserve_format)

    def _pack(self, gi, group):
        """The group's counters as 0-d views of one tensor per key (torch's
        state layout, counted with one operation per batch): {key: (NumPy view,
        {parameter id: position}, views)}.  Kept while every member's counter
        is still its view; otherwise rebuilt from the group's parameters that
        have one (values kept, the views replace the tensors in self.state)."""
        out = {}
        members_all = group["params"]
        for key in self._counter_keys(group):
            pack = self._packs.get((gi, key))
            members = [p for p in members_all if key in self.state.get(p, ())]
            if pack is not None:
                arr, pos, views, base = pack
                if len(pos) == len(members) and all(
                        id(p) in pos and self.state[p][key] is views[pos[id(p)]] for p in members):
                    out[key] = pack
                    continue
            old = [self.state[p][key] for p in members]
            dtypes = {t.dtype for t in old}
            dtype = dtypes.pop() if len(dtypes) == 1 else _scalar_dtype(group.get("fused"))
            base = torch.tensor([t.item() for t in old], dtype=dtype)
            views = [base[i] for i in range(len(members))]
            for p, v in zip(members, views):
                dict.__setitem__(self.state[p], key, v)
            pos = {id(p): i for i, p in enumerate(members)}
            out[key] = self._packs[gi, key] = (base.numpy(), pos, views, base)
        return out

    # --- DTensor parameters (FSDP2): the kernels see each rank's local shards.
    # A plan's rows hold a DTensor parameter's local tensor, whose .grad is
    # set to the local shard of p.grad for the step, and a mirror of its
    # state dict with the local shards, refreshed before each step; the
    # compiled checks then see any change (a new gradient or state tensor).
    def _mirror(self, p):
        m = self._mirrors.get(p)
        if m is None:
            m = self._mirrors[p] = {}
        m.clear()
        m.update({k: _local(v) for k, v in self.state.get(p, {}).items()})
        return m

    def _sync_dtensors(self, attach):
        """Before a step (attach): the local shards' gradients and the state
        mirrors; after it: the gradients detached again (not kept alive)."""
        for p in self._mirrors:
            lp = p._local_tensor
            g = p.grad if attach else None
            if g is not None and not (_dtensor(g) and g._local_tensor.shape == lp.shape
                                      and g._local_tensor.dtype == lp.dtype):
                g = None  # the step's checks name the problem
            lp.grad = None if g is None else g._local_tensor
            if attach:
                self._mirror(p)

    def _batch(self, ps, names, dtype, packs, h):
        spec = self.spec
        ty = self._types(ps[0], h)
        keys = ((MASTER if ty.master else None, None)
                + tuple(n if n in names else None for n in spec.kernel_buffers))
        objs, states = [], []
        for p in ps:
            st = self._mirror(p) if _dtensor(p) else self.state[p]
            states.append(st)
            objs += [st[MASTER] if ty.master else _local(p), None] + [st[k] if k else None
                                                               for k in keys[2:]]
        ptrs = [0 if t is None else t.data_ptr() for t in objs]
        nbytes = [0 if t is None else t.nbytes for t in objs]
        compute = _TORCH_DTYPE[ty.compute]
        local = [_local(p) for p in ps]
        b = _kernels.Batch(_kernels.KIND_TORCH, spec.code, _DTYPE_CODE[compute], keys, objs,
                           states, ptrs, nbytes, [p.numel() for p in local],
                           dtype_obj=torch.float32 if ty.master else dtype,
                           shapes=[p.shape for p in local])
        if ty.staged:
            code, storage, stochastic, mirror = _precision.storage_codes(ty, len(keys))
            flat = {id(q): i for i, q in enumerate(q for g in self.param_groups
                                                   for q in g["params"])}
            staging = _kernels.Staging(code, storage, stochastic, mirror,
                                       ty.stochastic and ty.master, h["seed"],
                                       array_ids=[flat[id(p)] for p in ps])
            sdt = _TORCH_DTYPE[ty.state]
            sdtype = (torch.float32 if ty.master else dtype, dtype) + (sdt,) * (len(keys) - 2)
            aobjs = None
            if ty.master:
                aobjs = []
                for p in ps:
                    aobjs += [_local(p)] + [None] * (len(keys) - 1)
            b.stage(staging, dtype, ("",) + (None,) * (len(keys) - 1) if ty.master else None,
                    aobjs, sdtype)
        bp = []
        for key, (arr, pos, views, base) in packs.items():
            idx = [pos[id(p)] for p in ps]
            positions = None if idx == list(range(len(arr))) else np.array(idx, dtype=np.intp)
            if key == "step":
                b.step_pack = (arr, positions, [views[i] for i in idx])
            else:
                bp.append((key, arr, positions, [views[i] for i in idx], 0.0, 0.0))
        b.packs = bp
        b.has_step = self.spec.name != "SGD" or bool(h.get("stochastic_rounding"))
        return b


# --------------------------------------------------------------------------
def _make(spec):
    """adaptopt.torch.<Name>: a subclass of torch.optim.<Name> with the engine's
    step; for an algorithm torch does not have (Lion), of torch.optim.Optimizer
    with the Spec's constructor and checks."""
    base = getattr(torch.optim, spec.torch) if spec.torch else torch.optim.Optimizer
    if spec.torch:
        sig = inspect.signature(base.__init__)
        params = list(sig.parameters.values())
    else:
        P = inspect.Parameter
        params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        params += [P(k, P.POSITIONAL_OR_KEYWORD, default=h.default)
                   for k, h in spec.hyper.items() if h.public]
        sig = inspect.Signature(params)
    params.append(inspect.Parameter("n_threads", inspect.Parameter.KEYWORD_ONLY, default=None))
    if spec.torch:
        params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                   for k, v in _PRECISION.items()]
    new_sig = sig.replace(parameters=params)

    def __init__(self, *args, n_threads=None, **kwargs):
        resolve_threads(n_threads)
        self.n_threads = n_threads
        self._plans = None  # add_param_group runs inside torch's __init__
        if spec.torch:
            prec = {k: kwargs.pop(k, v) for k, v in _PRECISION.items()}
            self._precision_defaults = {k: spec.hyper[k].check(k, v) for k, v in prec.items()}
            base.__init__(self, *args, **kwargs)
            self.defaults.update({k: v for k, v in prec.items() if v != _PRECISION[k]})
            if spec.eager_state:  # torch's Adagrad made its state in the parameter's dtype
                for group in self.param_groups:
                    h = self._check_group(group)
                    for p in group["params"]:
                        st = self.state.get(p, {})
                        sdt = _TORCH_DTYPE[self._types(p, h).state]
                        for key in spec.buffers(h):
                            if key in st and st[key].dtype is not sdt:
                                st[key] = self._new_buffer(key, p, sdt, h)
        else:
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            a = dict(bound.arguments)
            del a["self"]
            params = a.pop("params")
            defaults = {**a, **{k: h.default for k, h in spec.hyper.items() if not h.public}}
            checked = spec.checked({k: _plain(v) for k, v in defaults.items()}, spec.name)
            if checked.get("state_dtype") == _precision.INT8:
                raise ValueError("state_dtype='int8' (8-bit state) is not in the torch drop-in "
                                 "yet: use the NumPy API (adaptopt.Adam etc.), or "
                                 "state_dtype='bfloat16'")
            torch.optim.Optimizer.__init__(self, params, defaults)
        self._adaptopt_init(n_threads)

    __init__.__signature__ = new_sig
    if spec.torch:
        doc = (f"torch.optim.{spec.torch} with adaptopt's fused CPU kernel.\n\n"
               "Same arguments, defaults, checks, state and state_dict as torch.optim (it is a\n"
               f"subclass of torch.optim.{spec.torch}); one kernel call per (group, dtype, step)\n"
               "batch updates CPU float32/float64 dense tensors in place.  Extra keyword:\n"
               "n_threads (None: adaptopt's default, see adaptopt.set_num_threads).\n\n"
               "torch.optim's documentation follows.\n\n" + (base.__doc__ or ""))
    else:
        doc = (f"{spec.name} for torch parameters, with adaptopt's fused CPU kernel (torch.optim\n"
               f"has no {spec.name}).  A torch.optim.Optimizer: param groups, hooks, lr\n"
               "schedulers\n"
               f"and state_dict as usual; the same definition as adaptopt.{spec.name}.\n\n"
               + spec.doc)
    return type(spec.name, (_Fused, base), {
        "spec": spec, "__init__": __init__, "__doc__": doc, "__module__": __name__,
        "__qualname__": spec.name, "step": _Fused.step,
        "_step_supports_amp_scaling": True})


for _spec in SPECS:
    globals()[_spec.name] = _make(_spec)
del _spec


class _FusedEntry:
    """Mixin over a torch.optim class whose algorithm has its own C entry
    point (Adafactor): one call per parameter, each step validated in full
    (parameters, gradients, and state tensors against the shapes the
    algorithm gives them) before the first call; NumPy views of the tensors'
    memory, no copies."""

    spec = None

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step (torch's arguments and hooks)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        spec = self.spec
        module = __import__(spec.update.__module__, fromlist=["kernel_call"])
        entry = getattr(_kernels, spec.entry["function"])
        threads = resolve_threads(getattr(self, "n_threads", None))
        work = []
        for gi, group in enumerate(self.param_groups):
            where = f"param_groups[{gi}]: "
            h = self._check_group(group, where)
            for k, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                label = _where(group, gi, k, p)
                if _dtensor(p):
                    raise TypeError(f"{label} is a DTensor (e.g. FSDP2's shard): {spec.name}'s "
                                    "factored statistics need the whole matrix on one rank; "
                                    "use an elementwise optimizer (adaptopt.torch.AdamW, ...)")
                err = _param_problem(type(self), p, label, dense=False) or _grad_problem(
                    type(self), p, p.grad, label, strided=False)
                if err is not None:
                    raise err
                st = self.state.get(p, {})
                for key, shape in spec.state_shapes(tuple(p.shape)).items():
                    v = st.get(key)
                    if v is not None and not (
                            isinstance(v, torch.Tensor) and v.is_cpu and v.dtype is p.dtype
                            and tuple(v.shape) == tuple(shape) and v.is_contiguous()
                            and v.layout is torch.strided):
                        raise ValueError(f"state[{key!r}] of {label} must be a contiguous CPU "
                                         f"tensor of shape {tuple(shape)} and dtype {p.dtype}")
                step = st.get("step")
                t = (float(step) if step is not None else 0.0) + 1
                if not (np.isfinite(t) and t >= 1 and t % 1 == 0):
                    raise ValueError(f"state['step'] of {label} must be a whole number >= 0")
                work.append((p, group, h, int(t)))
        spans = _engine.sorted_spans(
            [_span(p) + ("a parameter", p) for p, *_ in work]
            + [_span(v) + ("a state tensor", v) for p, *_ in work
               for v in self.state.get(p, {}).values()
               if isinstance(v, torch.Tensor) and v.dim() > 0])
        for p, *_ in work:
            if spans.find(*_span(p.grad)) is not None:
                raise ValueError("a gradient shares memory with a parameter or state tensor "
                                 "the step writes: give each parameter a separate gradient")
        scale, skip = _amp_args(self)
        if skip:
            return loss
        # nothing changes above this line
        for p, *_ in work:  # GradScaler's unscale, as torch's fused steps leave it (not fused)
            if scale is not None:
                p.grad.div_(scale[0])
        for p, group, h, t in work:
            st = self.state[p]
            if "step" not in st:
                st["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
            for key, shape in spec.state_shapes(tuple(p.shape)).items():
                if key not in st:
                    st[key] = torch.zeros(shape, dtype=p.dtype)
            h = _engine.Snapshot(spec, group, type(self).__name__,
                                 clean=lambda g: self._clean(g)).resolved(t)
            views = {k: v.numpy() for k, v in st.items() if k != "step"}
            rc = entry(*module.kernel_call(h, t, p.detach().numpy(), p.grad.numpy(), views,
                                           threads))
            if rc != _kernels.OK:
                raise RuntimeError(f"adaptopt {spec.name} kernel failed with code {rc}")
            st["step"].fill_(t)
        return loss


def _make_entry(spec):
    base = getattr(torch.optim, spec.torch)
    sig = inspect.signature(base.__init__)
    params = list(sig.parameters.values())
    params.append(inspect.Parameter("n_threads", inspect.Parameter.KEYWORD_ONLY, default=None))

    def __init__(self, *args, n_threads=None, **kwargs):
        resolve_threads(n_threads)
        self.n_threads = n_threads
        base.__init__(self, *args, **kwargs)

    __init__.__signature__ = sig.replace(parameters=params)
    doc = (f"torch.optim.{spec.torch} with adaptopt's fused CPU kernels (a reduction pass and\n"
           "an update pass per parameter, bitwise independent of the thread count).  A\n"
           f"subclass of torch.optim.{spec.torch}; extra keyword: n_threads.\n\n"
           "torch.optim's documentation follows.\n\n" + (base.__doc__ or ""))
    helpers = {"_clean": _Fused._clean, "_check_group": _Fused._check_group}
    return type(spec.name, (_FusedEntry, base), {
        "spec": spec, "__init__": __init__, "__doc__": doc, "__module__": __name__,
        "__qualname__": spec.name, "_step_supports_amp_scaling": True, **helpers})


for _spec in ENTRY_SPECS:
    globals()[_spec.name] = _make_entry(_spec)
del _spec

from . import _sparse_torch  # noqa: E402  (it reads this module's checks)
from ._sparse_torch import SparseAdam  # noqa: E402

__all__ += ["SparseAdam"]

from ._in_backward import step_in_backward  # noqa: E402,F401  (the step inside backward)

__all__.append("step_in_backward")
