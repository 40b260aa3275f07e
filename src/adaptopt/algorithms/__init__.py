"""The algorithms: one module each, holding its reference step (plain NumPy,
read as the math) and its :class:`~adaptopt._spec.Spec`.

``SPECS`` lists every optimizer class in the order the package exports them;
``adaptopt.reference``, ``adaptopt`` and ``adaptopt.torch`` make their
classes from it.
"""

from . import adagrad, adam, adamax, lion, nadam, radam, rmsprop, sgd

SPECS = (adam.ADAM, adam.ADAMW, adagrad.ADAGRAD, rmsprop.RMSPROP, sgd.SGD,
         nadam.NADAM, radam.RADAM, adamax.ADAMAX, lion.LION)

__all__ = ["SPECS"]
