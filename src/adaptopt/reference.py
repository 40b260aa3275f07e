"""The executable spec: every optimizer in plain NumPy.

Each class has the signature and behaviour of its fast twin in ``adaptopt``
and updates each array with its algorithm's reference step
(``adaptopt.algorithms.<name>.update``), which reads like the math.  The C
kernels reproduce these updates bit for bit, which fixes three things:

* the operation order is torch.optim's single-tensor order (torch 2.13,
  ``torch/optim/*.py``), one NumPy operation per rounding;
* scalars (bias corrections, step size) are Python floats computed once per
  step; NumPy casts a Python float to the array's dtype before it multiplies
  (NEP 50), and the kernels receive them cast the same way;
* no fused multiply-add anywhere.

The update works on copies of the gradient (``g = -g``, ``g = g + wd * p``)
and writes parameters and state in place.
"""

import numpy as np

from . import _amp, _base, _classes, _precision
from .algorithms import ENTRY_SPECS, SPECS
from .algorithms._common import lerp

__all__ = [s.name for s in SPECS + ENTRY_SPECS] + ["lerp"]


class _Reference(_base.Optimizer):
    _rows_reference = True  # step_rows runs the NumPy twin (adaptopt._rows)

    def _apply(self, grads, snaps, resolved, batches, scale=None):
        spec = self.spec
        div, mul = (0.0, 1.0) if scale is None else scale[:2]
        # Overflow to inf and NaN are results, as in torch and the kernels: no warnings.
        with np.errstate(all="ignore"):
            for (gi, _, t, s, _), idx in batches.items():
                h = resolved[gi, t]
                new_s = spec.advance(h, t, dict(s)) if spec.advance else None
                for i in idx:
                    st = self.state[i]
                    p, g = self._params[i], grads[i]
                    if spec.entry is None and self._types(p, h, g).staged:
                        _precision.reference_step(spec, p, g, st, t, h, i, div, mul)
                    else:  # g in the compute type: g / div * mul (_amp.unscaled)
                        spec.update(p, _amp.unscaled(g, div, mul), st, t, h)
                    st["step"] = t
                    if new_s:
                        st.update(new_s)


for _spec in SPECS + ENTRY_SPECS:
    globals()[_spec.name] = _classes.make(
        _spec, _Reference, __name__,
        "This is the NumPy reference (``adaptopt.reference``): the executable spec that the "
        f"fast ``adaptopt.{_spec.name}`` matches bit for bit.")
del _spec
