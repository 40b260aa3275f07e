"""adaptopt.torch.step_in_backward: each parameter's update inside backward."""

import torch

__all__ = ["step_in_backward"]


def step_in_backward(optimizer_class, params, *args, **kwargs):
    """Run each parameter's update inside backward, from its
    post-accumulate-grad hook, and free its gradient at once.

    The update of a parameter runs as soon as its gradient is accumulated
    (``Tensor.register_post_accumulate_grad_hook``), while the gradient is
    still in cache; then ``p.grad`` is set to None, so the gradients of the
    whole model never exist at once.  Each parameter has its own optimizer
    (one cached plan, one kernel call per step): what changes is when the
    update runs and how much gradient memory is alive, not the arithmetic --
    the parameters are bitwise those of ``backward()`` then ``step()``.

    Parameters
    ----------
    optimizer_class : type
        An elementwise ``adaptopt.torch`` optimizer class (AdamW, ...).
    params : iterable of torch.Tensor
        Leaf tensors that require grad.
    *args, **kwargs
        The hyperparameters for ``optimizer_class``.

    Returns
    -------
    dict
        ``{parameter: its optimizer}`` (for lr schedulers, ``state_dict``,
        ...); its ``remove()`` method removes the hooks (the step after
        backward works again).

    Notes
    -----
    Gradient accumulation over micro-batches and gradient clipping by the
    global norm need all gradients before any update: use the usual step
    for those.
    """
    params = list(params)
    for k, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not p.is_leaf or not p.requires_grad:
            raise ValueError(f"params[{k}] must be a leaf tensor that requires grad")
    opts = _InBackward()
    made = [(p, optimizer_class([p], *args, **kwargs)) for p in params]  # all checked first

    def hook(p):
        opts[p].step()
        p.grad = None

    for p, opt in made:
        opts[p] = opt
        opts.handles.append(p.register_post_accumulate_grad_hook(hook))
    return opts


class _InBackward(dict):
    """{parameter: optimizer}; ``handles``: the hooks' handles, ``remove()``
    takes them all out."""

    def __init__(self):
        super().__init__()
        self.handles = []

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles.clear()
