"""What torch 2.13's optimizer constructors share in their argument checks."""

import sys


def is_tensor(x):
    """isinstance(x, torch.Tensor), without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def tensor_lr(lr):
    """torch's first check in every constructor taking ``lr``."""
    if is_tensor(lr) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
