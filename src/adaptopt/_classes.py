"""Optimizer classes made from Specs, for the NumPy front end.

``make(spec, base, module)`` gives the class ``spec.name``: its constructor
takes ``params``, the Spec's public hyperparameters in order (positional or
by keyword, torch.optim's convention) and ``n_threads``; its docstring is
written from the Spec (numpydoc sections)."""

import inspect

from . import _precision

__all__ = ["make", "signature"]

# What each hyperparameter means, for the docstrings; a Spec's name wins.
MEANING = {
    "lr": "Learning rate, or a schedule: a callable ``lr(step)`` (step from 1), such as "
          "those of :mod:`adaptopt.schedules`.",
    "betas": "Decay rates ``(beta1, beta2)`` of the first and second moment estimates, "
             "each in [0, 1).",
    "eps": "Added to the denominator for numerical stability.",
    "weight_decay": "Weight decay: L2 penalty added to the gradient (decoupled, applied to "
                    "the parameter, where the algorithm says so).",
    "amsgrad": "Use the AMSGrad variant: the maximum of past second moments.",
    "maximize": "Maximize the objective instead of minimizing it (the gradient is negated).",
    "lr_decay": "Learning-rate decay: step t uses ``lr / (1 + (t - 1) * lr_decay)``.",
    "initial_accumulator_value": "Initial value of the sum of squared gradients.",
    "alpha": "RMSprop: smoothing constant of the squared-gradient average, in [0, 1); "
             "ASGD: the power of the step-size decay.",
    "momentum_decay": "NAdam's momentum decay psi: mu_t = beta1 * (1 - 0.5 * 0.96^(t * psi)).",
    "rho": "Decay rate of the running averages of squared gradients and updates.",
    "etas": "Multiplicative decrease and increase factors ``(etaminus, etaplus)``.",
    "step_sizes": "Minimal and maximal allowed step sizes ``(min, max)``.",
    "lambd": "Decay term of ASGD's step size eta.",
    "t0": "The step from which ASGD averages.",
    "beta2_decay": "The decay rate of the second moment's weight: 1 - beta2_t = t^beta2_decay.",
    "d": "Clipping threshold: the update's RMS is at most d.",
    "momentum": "Momentum factor.",
    "centered": "Normalize by an estimate of the gradient's variance (centered RMSprop).",
    "dampening": "Dampening for momentum.",
    "nesterov": "Use Nesterov momentum (needs momentum > 0 and dampening = 0).",
    "decoupled_weight_decay": "Apply weight decay to the parameter (``p *= 1 - lr * wd``, as "
                              "AdamW) instead of adding it to the gradient.",
}


def signature(spec, first="params"):
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P(first, P.POSITIONAL_OR_KEYWORD)]
    params += [P(k, P.POSITIONAL_OR_KEYWORD, default=h.default)
               for k, h in spec.hyper.items() if h.public]
    params.append(P("n_threads", P.KEYWORD_ONLY, default=None))
    return inspect.Signature(params)


def docstring(spec, kind):
    lines = [spec.doc, "", "Parameters", "----------",
             "params : iterable of ndarray or of dict",
             "    The arrays to optimize (float32 or float64, "
             + ("C-contiguous" if spec.entry else "dense in any order of dimensions")
             + ", updated in place), "
             "or param groups: dicts with ``params`` and hyperparameters that override the "
             "defaults."]
    for k, h in spec.hyper.items():
        if h.public:
            lines += [f"{k} : default {h.default!r}",
                      f"    {MEANING.get(k) or _precision.MEANING.get(k, k)}"]
    lines += ["n_threads : int or None, default None",
              "    Threads for the kernel (None: :func:`adaptopt.get_num_threads`; -1: all "
              "CPUs; counts above the CPUs are clamped)."]
    lines += ["", "Raises", "------",
              "TypeError",
              "    A parameter, gradient or hyperparameter of the wrong kind (not a float32 or "
              "float64 array, a string lr, ...), named in the message.",
              "ValueError",
              "    A value out of range, a shape or layout the kernel cannot use, or arrays "
              "that share memory, named in the message.  Raised before anything changes.",
              "", "See Also", "--------",
              f"adaptopt.reference.{spec.name} : the NumPy reference (the executable spec).",
              f"adaptopt.torch.{spec.name} : the torch.optim drop-in.",
              "adaptopt.schedules : learning-rate schedules to pass as ``lr``."]
    lines += ["", "Notes", "-----", kind]
    if spec.torch:
        lines += ["", f"Follows ``torch.optim.{spec.torch}`` (torch 2.13): its definition, "
                      "defaults and operation order (the single-tensor path)."]
    if spec.references:
        lines += ["", "References", "----------", spec.references]
    lines += ["", "Examples", "--------", ">>> import numpy as np, adaptopt",
              ">>> w = np.zeros(3, dtype=np.float32)",
              f">>> opt = adaptopt.{spec.name}([w])",
              ">>> opt.step([np.ones(3, dtype=np.float32)])",
              ">>> opt.state[0]['step']", "1"]
    return "\n".join(lines)


def make(spec, base, module, kind):
    sig = signature(spec)

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        del a["self"]
        params, n_threads = a.pop("params"), a.pop("n_threads")
        hidden = {k: h.default for k, h in spec.hyper.items() if not h.public}
        base.__init__(self, params, {**a, **hidden}, n_threads)

    __init__.__signature__ = sig
    __init__.__doc__ = f"Create a {spec.name} optimizer; see the class docstring."
    return type(spec.name, (base,), {"spec": spec, "__init__": __init__,
                                     "__doc__": docstring(spec, kind), "__module__": module,
                                     "__qualname__": spec.name})
