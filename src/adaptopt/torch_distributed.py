"""adaptopt.torch with torch.distributed: functional optimizers, the step in backward.

Importing this module registers a functional twin of every elementwise
``adaptopt.torch`` optimizer with ``torch.distributed.optim``
(``register_functional_optim``), so that the code paths which need one
accept adaptopt's classes::

    import adaptopt.torch, adaptopt.torch_distributed   # the second import registers
    zero = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=adaptopt.torch.AdamW,
                                   overlap_with_ddp=True, lr=1e-3)
    ddp.register_comm_hook(None, hook_with_zero_step(allreduce_hook, ddp, zero))

    ddp._register_fused_optim(adaptopt.torch.AdamW, lr=1e-3)   # the step per bucket

(torch.distributed.optim is imported here, not by ``adaptopt.torch``: it
takes seconds to import.)  A functional optimizer (:class:`Functional`)
steps parameters with gradients given as arguments instead of ``.grad``:
``step(gradients)`` one fused call over the parameters given gradients
(ZeRO steps each DDP bucket's share this way), ``step_param(param, grad)``
one parameter (DDP's per-bucket hooks), each through a cached plan.
"""

import torch
from torch.distributed.optim.utils import register_functional_optim

from . import torch as _ato
from .algorithms import SPECS

__all__ = ["Functional", "functional"]


def _proxy(p):
    """A tensor that shares p's memory and has its own ``.grad``: the inner
    optimizer steps it, so p's own ``.grad`` (DDP's bucket view, ...) is
    never touched."""
    q = p.detach()
    q.requires_grad_(False)
    return q


class Functional:
    """A functional ``adaptopt.torch`` optimizer (torch.distributed.optim's
    protocol): gradients are passed to :meth:`step` / :meth:`step_param`.

    Parameters
    ----------
    params : iterable of torch.Tensor
        The parameters :meth:`step` updates (one group).
    *args, **kwargs
        The hyperparameters of ``optimizer_class`` (lr, betas, ...),
        checked by it.
    _allow_empty_param_list : bool
        torch.distributed.optim's flag: no parameters is allowed (they come
        later, through :meth:`step_param`).

    Attributes
    ----------
    param_group : dict
        ``{"params": params, **hyperparameters}``; ``param_groups`` is
        ``[param_group]``.  Edits of the hyperparameters (ZeRO copies its
        ``param_groups`` into it, an lr scheduler) apply from the next step.
    state : dict
        The per-parameter state, keyed by parameter, as ``optimizer_class``
        keeps it.
    """

    optimizer_class = None

    def __init__(self, params, *args, _allow_empty_param_list=False, **kwargs):
        params = list(params)
        if not params and not _allow_empty_param_list:
            raise ValueError("optimizer got an empty parameter list")
        self._args, self._kwargs = args, kwargs
        self._params = params
        self._proxies = [_proxy(p) for p in params]
        self._whole = self.optimizer_class([{"params": self._proxies}], *args, **kwargs)
        self.defaults = self._whole.defaults
        self.param_group = {**self._whole.param_groups[0], "params": params}
        self.param_groups = [self.param_group]
        self._single = {}  # parameter -> (proxy, its own optimizer): step_param

    @property
    def state(self):
        out = {p: self._whole.state[q] for p, q in zip(self._params, self._proxies)
               if q in self._whole.state}
        out.update({p: opt.state[q] for p, (q, opt) in self._single.items() if q in opt.state})
        return out

    def _sync(self, opt):
        """The exposed group's hyperparameters into the inner optimizer's."""
        inner = opt.param_groups[0]
        for k, v in self.param_group.items():
            if k != "params" and inner.get(k) is not v:
                inner[k] = v

    @staticmethod
    def _check_memory(p, q, where):
        if q.data_ptr() != p.data_ptr() or q.shape != p.shape or q.dtype != p.dtype:
            raise ValueError(f"{where}'s memory was replaced (p.data = ...) after the "
                             "functional optimizer was created; create a new one")

    @staticmethod
    def _run(opt, proxies, grads):
        for k, (q, g) in enumerate(zip(proxies, grads)):
            if g is not None and not isinstance(g, torch.Tensor):
                raise TypeError(f"gradients[{k}] must be a tensor or None, got "
                                f"{type(g).__name__}")
            if g is not None and (g.dtype != q.dtype or g.shape != q.shape or g.is_sparse
                                  or g.device != q.device):
                raise ValueError(f"gradients[{k}] (shape {tuple(g.shape)}, dtype {g.dtype}, "
                                 f"device {g.device}) does not match its parameter (shape "
                                 f"{tuple(q.shape)}, dtype {q.dtype}, device {q.device})")
        try:
            for q, g in zip(proxies, grads):
                q.grad = g
            opt.step()
        finally:
            for q in proxies:
                q.grad = None

    def step(self, gradients):
        """One fused step of the parameters whose gradient is not None.

        Parameters
        ----------
        gradients : list of torch.Tensor or None
            One per parameter, in order.
        """
        if len(gradients) != len(self._params):
            raise ValueError(f"gradients has {len(gradients)} entries, the optimizer "
                             f"{len(self._params)} parameters")
        for k, (p, q) in enumerate(zip(self._params, self._proxies)):
            self._check_memory(p, q, f"params[{k}]")
        self._sync(self._whole)
        self._run(self._whole, self._proxies, list(gradients))

    def step_param(self, param, grad):
        """Step one parameter (its own cached plan, one kernel call).

        Parameters
        ----------
        param : torch.Tensor
        grad : torch.Tensor or None
            None: nothing is done.
        """
        entry = self._single.get(param)
        if entry is None:
            q = _proxy(param)
            entry = self._single[param] = (q, self.optimizer_class(
                [{"params": [q]}], *self._args, **self._kwargs))
        q, opt = entry
        self._check_memory(param, q, "the parameter")
        if grad is None:
            return
        self._sync(opt)
        self._run(opt, [q], [grad])


def _make(cls):
    return type(f"Functional{cls.__name__}", (Functional,), {
        "optimizer_class": cls, "__module__": __name__,
        "__doc__": f"The functional twin of adaptopt.torch.{cls.__name__} (see Functional)."})


functional = {}
"""{adaptopt.torch class: its functional twin}, all registered with torch."""
for _spec in SPECS:
    _cls = getattr(_ato, _spec.name)
    functional[_cls] = globals()[f"Functional{_spec.name}"] = _make(_cls)
    register_functional_optim(_cls, functional[_cls])
    __all__.append(f"Functional{_spec.name}")
del _spec, _cls
