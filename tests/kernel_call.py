"""Run one algorithm's C kernel directly on NumPy arrays, from its Spec.

For tests of a kernel body against its reference step before (or besides)
the optimizer classes: the flags and scalars come from the Spec exactly as
the engine computes them.
"""

import numpy as np

from adaptopt import _kernels

DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


def kernel_step(spec, h, t, p, g, state, s=None, extra_flags=(), n_threads=1):
    """Update p and the buffers in state (dict name -> array) in place by one
    kernel call of spec's algorithm, step t under hyperparameters h (lr a
    number), scalar state s."""
    flags, scal = spec.fixed_scalars(h)
    for pos, value in zip(spec.step_positions(), spec.per_step(h, t, s)):
        scal[pos] = value
    assert None not in scal, f"{spec.name}: scalars {spec.kernel_scalars} not all set: {scal}"
    flags |= spec.step_flag_bits(h, t, s)
    flags |= _kernels.flag_bits(spec.kernel, *extra_flags)
    arrays = [p, g] + [state.get(name) for name in spec.kernel_buffers]
    for a in arrays:
        assert a is None or (a.flags.c_contiguous and a.dtype == p.dtype and a.shape == p.shape)
    ptr = np.array([0 if a is None else a.ctypes.data for a in arrays], dtype=np.uint64)
    offsets = np.array([0, p.size], dtype=np.uintp)
    rc = _kernels.step(spec.code, DTYPE_CODE[p.dtype], ptr, len(arrays), offsets,
                       np.array(scal, dtype=np.float64), flags, n_threads)
    assert rc == _kernels.OK, rc
