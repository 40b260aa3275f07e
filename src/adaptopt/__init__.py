"""adaptopt: fused, exactly specified adaptive optimizers for CPU code.

    >>> import numpy as np, adaptopt
    >>> w = np.zeros(3, dtype=np.float32)
    >>> opt = adaptopt.Adam([w], lr=0.1)
    >>> opt.step([np.ones(3, dtype=np.float32)])
    >>> w                        # -lr, to float32 rounding (the first step is lr * sign(g))
    array([-0.09999999, -0.09999999, -0.09999999], dtype=float32)

Every update runs in one compiled pass over memory and is bit for bit equal
to the NumPy reference in ``adaptopt.reference``.
"""

__version__ = "0.1.0"

from . import optim as _optim  # noqa: E402
from ._amp import StepResult  # noqa: E402
from ._bench import bench  # noqa: E402
from ._config import (  # noqa: E402
    _isa_from_env,
    available_isas,
    get_isa,
    get_num_threads,
    set_isa,
    set_num_threads,
    show_config,
)
from .optim import (  # noqa: E402
    ASGD,
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    NAdam,
    RAdam,
    RMSprop,
    Rprop,
)

_isa_from_env()

__all__ = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD", "Adadelta", "Rprop", "ASGD", "NAdam",
           "RAdam", "Adamax", "Lion", "Adafactor", "show_config", "get_num_threads",
           "set_num_threads", "get_isa", "set_isa", "available_isas", "bench", "StepResult"]
assert sorted(__all__[:13]) == sorted(_optim.__all__), "adaptopt exports every optimizer"
