"""Sparse COO gradients in the torch drop-ins (``nn.Embedding(sparse=True)``).

A sparse gradient of a parameter of shape (n_rows, ...) with one sparse
dimension names rows (``grad._indices()[0]``, in any order, repeats
allowed) and their values (``grad._values()``); the step updates those
rows only, through the row kernel of the NumPy API's ``step_rows``
(``adaptopt._rows``: repeated rows summed first, left to right; each row
updated by the algorithm's own segment function), on NumPy views of the
tensors' memory, no copies.

* ``adaptopt.torch.SparseAdam`` is torch.optim.SparseAdam: the moments and
  the parameter change on the gradient's rows only, with the step's bias
  corrections.  torch writes eps outside the bias correction
  (``p -= lr*sqrt(bc2)/bc1 * m/(sqrt(v) + eps)``); the Adam kernel takes
  ``eps/sqrt(bc2)`` for its eps, the same update to rounding.
* ``adaptopt.torch.Adagrad``: torch's sparse branch (``weight_decay`` must
  be 0, as in torch).
* ``adaptopt.torch.SGD``: torch's sparse update ``p += -lr*g`` for
  ``momentum=0`` and ``weight_decay=0``; torch keeps a sparse momentum
  buffer that grows with every row ever touched and moves all of them each
  step, which a row kernel does not reproduce: with momentum or weight
  decay a sparse gradient is refused (use torch.optim.SGD).

Everything is checked before anything changes; dense gradients in the same
step go through the dense engine as usual.
"""

import math
import types

import numpy as np
import torch

from . import _engine, _rows
from .algorithms import SPECS

__all__ = ["SparseAdam", "split", "run"]

ADAM = next(s for s in SPECS if s.name == "Adam")
SPARSE_OK = ("SGD", "Adagrad")  # drop-ins whose sparse gradients are taken here


def _span(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _as_table(t):
    """A NumPy view of a tensor as (n_rows, cols)."""
    a = t.detach().numpy()
    n = a.shape[0] if a.ndim else 1
    return a.reshape(n, a.size // n if n else int(np.prod(a.shape[1:], dtype=np.int64)))


def _sparse_rows(p, g, label):
    """(rows int64, values n x cols) of sparse gradient g of parameter p, or an error."""
    if g.device.type != "cpu":
        raise ValueError(f"the gradient of {label} is on device {g.device}: adaptopt.torch "
                         "updates CPU tensors only")
    if g.dtype is not p.dtype:
        raise TypeError(f"the gradient of {label} has dtype {g.dtype}, the parameter "
                        f"{p.dtype}: no silent cast is made")
    if g.shape != p.shape:
        raise ValueError(f"the gradient of {label} has shape {tuple(g.shape)}, the parameter "
                         f"{tuple(p.shape)}")
    if p.dim() < 1 or g.sparse_dim() != 1:
        raise ValueError(f"the sparse gradient of {label} has {g.sparse_dim()} sparse "
                         "dimensions: adaptopt.torch takes sparse gradients of rows (one "
                         "sparse dimension, as nn.Embedding(sparse=True) makes)")
    idx, vals = g._indices()[0], g._values()
    if not vals.is_contiguous():
        vals = vals.contiguous()  # the values, not the gradient: never written
    rows = idx.numpy()
    if rows.size and (rows.min() < 0 or rows.max() >= p.shape[0]):
        raise ValueError(f"the sparse gradient of {label} has row indices out of range "
                         f"[0, {p.shape[0]})")
    cols = int(np.prod(p.shape[1:], dtype=np.int64))
    return rows.astype(np.int64, copy=False), vals.detach().numpy().reshape(rows.size, cols)


def _check_tensor(st, key, p, label):
    v = st.get(key)
    if v is not None and not (isinstance(v, torch.Tensor) and v.is_cpu and v.dtype is p.dtype
                              and v.shape == p.shape and v.is_contiguous()
                              and v.layout is torch.strided):
        raise ValueError(f"state[{key!r}] of {label} must be a contiguous CPU tensor of shape "
                         f"{tuple(p.shape)} and dtype {p.dtype}")


def _check_spans(work):
    """No values array of a gradient overlaps what the step writes."""
    spans = []
    for item in work:
        spans += [_span(a) + (item["label"], a) for a in item["writes"]]
    found = _engine.sorted_spans(spans)
    for item in work:
        if item["g"].size and found.find(*_span(item["g"])) is not None:
            raise ValueError(f"the gradient of {item['label']} shares memory with a tensor the "
                             "step writes")


def _problem(opt, p, label):
    from .torch import _param_problem
    return _param_problem(type(opt), p, label)


def split(opt):
    """The drop-in's (SGD, Adagrad) parameters with a sparse gradient, checked,
    as work items for run(); [] if none.  Raises (changing nothing) for one
    this step cannot take."""
    from .torch import _where
    work = []
    for gi, group in enumerate(opt.param_groups):
        h = None
        for k, p in enumerate(group["params"]):
            g = p.grad
            if g is None or g.layout is not torch.sparse_coo:
                continue
            label = _where(group, gi, k, p)
            err = _problem(opt, p, label)
            if err is not None:
                raise err
            if h is None:
                h = opt._check_group(group, f"param_groups[{gi}]: ")
            name = opt.spec.name
            if name == "SGD" and (h["momentum"] != 0 or h["weight_decay"] != 0):
                raise TypeError(f"the gradient of {label} is sparse: adaptopt.torch.SGD takes "
                                "sparse gradients with momentum=0 and weight_decay=0 (torch's "
                                "sparse momentum buffer moves every row it ever touched); use "
                                "torch.optim.SGD, or nn.Embedding(sparse=False)")
            if name == "Adagrad" and h["weight_decay"] != 0:
                raise RuntimeError("weight_decay option is not compatible with sparse gradients")
            rows, vals = _sparse_rows(p, g, label)
            st = opt.state.get(p, {})
            t = 1
            if name == "Adagrad":
                _check_tensor(st, "sum", p, label)
                step = st.get("step")
                t = (float(step) if step is not None else 0.0) + 1
                if not (math.isfinite(t) and t >= 1 and t % 1 == 0):
                    raise ValueError(f"state['step'] of {label} must be a whole number >= 0")
            work.append({"p": p, "label": label, "rows": rows, "g": vals, "t": int(t),
                         "h": _engine.Snapshot(opt.spec, group, type(opt).__name__,
                                               clean=opt._clean).resolved(int(t)),
                         "writes": [_as_table(p)] + ([_as_table(st["sum"])] if "sum" in st
                                                     else [])})
    if work:
        _check_spans(work)
    return work


def run(opt, work, threads):
    """Take the steps split() checked."""
    spec = opt.spec
    for item in work:
        p, h, t = item["p"], item["h"], item["t"]
        st = opt.state[p]
        bufs = {}
        if spec.name == "Adagrad":
            if "sum" not in st:
                st["sum"] = torch.full_like(p, h["initial_accumulator_value"],
                                            memory_format=torch.preserve_format)
            if "step" not in st:
                st["step"] = torch.tensor(0.0)
            bufs["sum"] = _as_table(st["sum"])
        urows, order, starts = _rows.group_rows(item["rows"])
        _rows.apply_rows(spec, h, t, _as_table(p), item["g"], bufs, urows, order, starts,
                         None, None, threads)
        if spec.name == "Adagrad":
            st["step"].fill_(t)


class SparseAdam(torch.optim.SparseAdam):
    """torch.optim.SparseAdam with adaptopt's row kernel.

    A subclass of torch.optim.SparseAdam: the same arguments, defaults,
    checks, state (``step`` an int, ``exp_avg``, ``exp_avg_sq``) and
    state_dict; extra keyword ``n_threads``.  Each step updates the rows of
    each parameter's sparse gradient (repeated rows summed first) in one
    threaded pass over those rows, on CPU float32/float64 contiguous
    parameters; results are within a few ULP of torch's (torch adds eps to
    sqrt(v) before the bias correction; the kernel divides eps by it, see
    ``adaptopt._sparse_torch``).
    """

    # for the messages; entry (not None): float32/float64 parameters only
    spec = types.SimpleNamespace(name="SparseAdam", torch="SparseAdam", entry="rows")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False, *,
                 n_threads=None):
        from ._config import resolve_threads
        resolve_threads(n_threads)
        self.n_threads = n_threads
        super().__init__(params, lr=lr, betas=betas, eps=eps, maximize=maximize)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step (torch's arguments and hooks)."""
        from ._config import resolve_threads
        from .torch import _where
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        threads = resolve_threads(getattr(self, "n_threads", None))
        work = []
        for gi, group in enumerate(self.param_groups):
            for k, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("SparseAdam does not support dense gradients, please "
                                       "consider Adam instead")
                label = _where(group, gi, k, p)
                err = _problem(self, p, label)
                if err is not None:
                    raise err
                rows, vals = _sparse_rows(p, p.grad, label)
                st = self.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    _check_tensor(st, key, p, label)
                    if st and key not in st:
                        raise ValueError(f"state of {label} has no {key!r}")
                step = st.get("step", 0)
                if isinstance(step, torch.Tensor):
                    step = step.item()
                if isinstance(step, bool) or not (isinstance(step, (int, float)) and
                                                  math.isfinite(step) and step >= 0
                                                  and step % 1 == 0):
                    raise ValueError(f"state['step'] of {label} must be a whole number >= 0")
                b1, b2 = group["betas"]
                h = {"lr": float(group["lr"]), "betas": (float(b1), float(b2)),
                     "eps": float(group["eps"]), "weight_decay": 0.0, "amsgrad": False,
                     "maximize": bool(group.get("maximize", False)),
                     "decoupled_weight_decay": False}
                writes = [_as_table(p)] + [_as_table(st[k]) for k in ("exp_avg", "exp_avg_sq")
                                           if k in st]
                work.append({"p": p, "label": label, "rows": rows, "g": vals,
                             "t": int(step) + 1, "h": h, "writes": writes})
        if work:
            _check_spans(work)
        for item in work:  # nothing changes above this line
            p, h, t = item["p"], item["h"], item["t"]
            st = self.state[p]
            if len(st) == 0:
                st["step"] = 0
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["step"] = t
            if item["rows"].size == 0:
                continue
            bufs = {"exp_avg": _as_table(st["exp_avg"]), "exp_avg_sq": _as_table(st["exp_avg_sq"])}
            eps = h["eps"] / math.sqrt(1 - h["betas"][1] ** t)
            urows, order, starts = _rows.group_rows(item["rows"])
            _rows.apply_rows(ADAM, h, t, _as_table(p), item["g"], bufs, urows, order, starts,
                             None, None, threads, eps=eps)
        return loss
