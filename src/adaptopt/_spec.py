"""One description per algorithm: everything Python knows about it.

A :class:`Spec` is read by the NumPy reference (``adaptopt.reference``), the
fast optimizers (``adaptopt``), the torch drop-ins (``adaptopt.torch``), the
benchmark and the tests.  What C knows (the kernel's buffer order, scalar
names and flag bits) is not repeated here: it is read from the compiled
module (``_kernels.ALGORITHMS``, generated from ``csrc/algorithms.h``) and
the names a Spec uses are checked against it when the Spec is made.

A Spec's functions take ``h``, the group's checked hyperparameters (a dict,
``lr`` resolved to a number for the step), and ``t``, the step being taken
(1 for the first):

- ``update(p, g, state, t, h)``: the reference step, plain NumPy.
- ``buffers(h)``: the state buffers this step uses (kernel names).
- ``flags(h)``: the kernel's public flags that are set (names).
- ``fixed(h)``: the kernel scalars that do not depend on the step (name: value).
- ``per_step(h, t, s)``: those that do, a tuple in ``step_scalars`` order;
  ``s`` is the parameter's scalar state (a dict) or None.
- ``step_flags(h, t, s)``: public kernel flags that depend on the step or
  the scalar state (names; RAdam's ``rectified``, ASGD's ``average``: torch's
  ``mu != 1`` branch); the engine ORs them into ``flags(h)``.
- ``advance(h, t, s)``: the scalar state after step t (algorithms that keep
  per-parameter scalars, such as NAdam's ``mu_product``).

A non-elementwise algorithm (Adafactor) has no row in ``csrc/algorithms.h``:
``kernel`` is None and ``entry`` describes its own C entry point instead
(``{"function": name in _kernels, "buffers": (...), "scalars": (...),
"flags": (...)}``, names in that entry's order); ``state_shapes(shape)``
gives the shape of each state buffer the parameter of that shape has.
"""

import inspect
from typing import Any, Callable, NamedTuple

from . import _checks

__all__ = ["Hyper", "Spec"]


class Hyper(NamedTuple):
    """A hyperparameter: its default, its check ``check(name, value) -> clean``,
    and whether the constructor takes it (AdamW's decoupled_weight_decay is
    fixed)."""

    default: Any
    check: Callable
    public: bool = True


class Spec:
    """The description of one optimizer class (see the module docstring)."""

    def __init__(self, name, kernel, hyper, update, flags, fixed, per_step=None,
                 step_scalars=(), buffers=None, init=None, scalar_state=None, advance=None,
                 check=None, required=None, eager_state=False, torch=None, doc="",
                 references="", first_flag=None, step_flags=None, entry=None,
                 state_shapes=None):
        self.name = name                  # the class name: "Adam"
        self.kernel = kernel              # the C algorithm (algorithms.h): "adam"
        self.hyper = dict(hyper)          # name -> Hyper, in signature order
        self.update = update
        self.flags = flags
        self.fixed = fixed
        self.per_step = per_step or (lambda h, t, s: ())
        self.step_scalars = tuple(step_scalars)
        self._buffers = buffers
        self.init = dict(init or {})      # buffer -> fill f(h), or "grad" (the first gradient)
        self.first_flag = first_flag      # the kernel flag of a step that fills "grad" buffers
        self.scalar_state = dict(scalar_state or {})  # name -> initial value f(h)
        self.advance = advance
        self.check = check                # cross-hyperparameter check of the clean dict
        self._required = required
        self.eager_state = eager_state    # state is made in the constructor (torch's Adagrad)
        self.torch = torch                # the torch.optim class name, None if torch has none
        self.doc = inspect.cleandoc(doc)
        self.references = references
        self.step_flags = step_flags or (lambda h, t, s: ())
        self.has_step_flags = step_flags is not None
        self.entry = entry                # non-elementwise: its C entry point (see above)
        if entry is None:                 # every elementwise algorithm: the precision options
            from . import _precision
            self.hyper.update(_precision._hyper())
        self.state_shapes = state_shapes
        if entry is None:
            info = _kernel_info(kernel)
        else:
            info = dict(entry, code=None, buffers=("p", "g") + tuple(entry["buffers"]))
        self.kernel_buffers = info["buffers"][2:]   # after p and g
        self.kernel_scalars = info["scalars"]
        self.kernel_flags = info["flags"]
        self.code = info["code"]
        self.all_buffers = self.kernel_buffers     # the buffers a state may hold
        self._check_against_kernel()

    # --- what the engine asks
    def buffers(self, h):
        """The state buffers a step under h uses, in kernel order."""
        return self.all_buffers if self._buffers is None else tuple(self._buffers(h))

    def required(self, h):
        """Buffers a state that has taken a step must have (checked on load)."""
        return self.buffers(h) if self._required is None else tuple(self._required(h))

    def checked(self, group, owner):
        """The group's hyperparameters checked and cleaned (a new dict)."""
        unknown = set(group) - set(self.hyper) - {"params", "param_names"}
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} for "
                             f"{owner}; known: {list(self.hyper)}")
        missing = [k for k in self.hyper if k not in group]
        if missing:
            raise ValueError(f"param group is missing hyperparameter(s) {missing}")
        h = {k: spec.check(k, group[k]) for k, spec in self.hyper.items()}
        if self.check is not None:
            self.check(h)
        return h

    def kernel_flags_of(self, h):
        """The public flag bits of a step under h."""
        names = self.flags(h)
        return sum(1 << self.kernel_flags.index(n) for n in names)

    def step_flag_bits(self, h, t, s):
        """The public flag bits step t chooses from the scalar state s (``step_flags``)."""
        return sum(1 << self.kernel_flags.index(n) for n in self.step_flags(h, t, s))

    def fixed_scalars(self, h):
        """(flags, scalars as a list in kernel order with the step's slots None)."""
        values = self.fixed(h)
        out = [values.get(n) for n in self.kernel_scalars]
        return self.kernel_flags_of(h), out

    def step_positions(self):
        return tuple(self.kernel_scalars.index(n) for n in self.step_scalars)

    # --- consistency with the compiled kernel
    def _check_against_kernel(self):
        unknown = set(self.step_scalars) - set(self.kernel_scalars)
        unknown |= set(self.init) - set(self.kernel_buffers)
        if unknown:
            raise RuntimeError(f"{self.name}: {sorted(unknown)} are not scalars/buffers of "
                               f"the {self.kernel!r} kernel (csrc/algorithms.h)")
        h = {k: v.default for k, v in self.hyper.items()}
        names = set(self.fixed(h)) | set(self.step_scalars)
        if names != set(self.kernel_scalars):
            raise RuntimeError(f"{self.name}: fixed() and step_scalars give {sorted(names)}, "
                               f"the {self.kernel!r} kernel takes {list(self.kernel_scalars)}")
        bad = (set(self.flags(h)) | ({self.first_flag} if self.first_flag else set())) - set(
            self.kernel_flags)
        s = {k: f(h) for k, f in self.scalar_state.items()} or None
        bad |= set(self.step_flags(h, 1, s)) - set(self.kernel_flags)
        if bad:
            raise RuntimeError(f"{self.name}: flags {sorted(bad)} are not flags of the "
                               f"{self.kernel!r} kernel ({list(self.kernel_flags)})")

    def defaults(self):
        return {k: v.default for k, v in self.hyper.items()}

    def __repr__(self):
        return f"Spec({self.name!r}, kernel={self.kernel!r})"


def _kernel_info(kernel):
    from . import _kernels
    try:
        return _kernels.ALGORITHMS[kernel]
    except KeyError:
        raise RuntimeError(f"no kernel {kernel!r} in this build "
                           f"(compiled: {list(_kernels.ALGORITHMS)})") from None


checks = _checks
