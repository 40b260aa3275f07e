"""The algorithms: one module each, holding its reference step (plain NumPy,
read as the math) and its :class:`~adaptopt._spec.Spec`.

``SPECS`` lists every optimizer class in the order the package exports them;
``adaptopt.reference``, ``adaptopt`` and ``adaptopt.torch`` make their
classes from it.
"""

from . import (
         adadelta,
         adafactor,
         adagrad,
         adam,
         adamax,
         asgd,
         lion,
         nadam,
         radam,
         rmsprop,
         rprop,
         sgd,
)

SPECS = (adam.ADAM, adam.ADAMW, adagrad.ADAGRAD, rmsprop.RMSPROP, sgd.SGD,
         adadelta.ADADELTA, rprop.RPROP, asgd.ASGD,
         nadam.NADAM, radam.RADAM, adamax.ADAMAX, lion.LION)

# Algorithms with their own C entry point (Spec.entry): not in SPECS until the
# engine calls entries (see adafactor.kernel_call for how).
ENTRY_SPECS = (adafactor.ADAFACTOR,)

__all__ = ["SPECS", "ENTRY_SPECS"]
