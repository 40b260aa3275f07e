"""8-bit optimizer state: the executable spec of block-wise dynamic quantisation.

A float32 state buffer of n elements is stored as n uint8 *codes* and one
float32 *absmax* per block of :data:`BLOCK` = 256 elements (block ``b`` holds
elements ``256*b`` to ``256*b + 255`` of the array; the last may be shorter).
Element ``j`` of block ``b`` decodes to ``MAP[codes[j]] * absmax[b]``, one
float32 multiplication.  Two maps, from bitsandbytes' 8-bit optimizers
(``bitsandbytes.functional.create_dynamic_map``; Dettmers et al. 2022):

- the **signed** map (first moments, momentum: values of either sign):
  127 negative values, 0 and 128 positive values up to 1.0 (it has no -1.0);
- the **unsigned** map (second moments, sums of squares: values >= 0):
  0 and 255 positive values up to 1.0.

Both are sorted, so codes order like the values they stand for; ``-MAP_S[127 - q]
== MAP_S[127 + q]`` for q = 0..127.

Quantising a block x (float32, at most 256 values), in this order:

1. ``A = max |x_j|``.  If any x_j is NaN or infinite, the block is stored as
   ``absmax = NaN`` (0x7FC00000) with every code the map's zero code (it
   decodes to NaN throughout: a diverged block stays visibly diverged).  If
   ``A == 0`` the block is stored as ``absmax = 0`` and zero codes (``-0.0``
   decodes to ``+0.0``).  Otherwise ``absmax = A``.
2. ``y_j = x_j / A`` (float32 division, correctly rounded), so ``|y_j| <= 1``.
3. Each y_j becomes the code of a map value of the same sign (y_j's sign bit;
   the unsigned map gives code 0 to any y_j with its sign bit set), chosen
   from the magnitudes ``P`` of that sign (signed map: ``P = MAP_S[127:]``,
   129 values, ``P[:128]`` for negative y; unsigned: ``P = MAP_U``) by

   - **nearest** (default): the index q of the ``P[q]`` nearest to ``|y|``,
     ties (|y| exactly half-way, compared exactly) to the smaller magnitude,
     i.e. toward zero;
   - **stochastic**: ``lo = P[q0] <= |y| < P[q0 + 1] = hi`` (q = q0 if
     ``|y| >= `` the last P), ``frac = (|y| - lo) / (hi - lo)`` in float32,
     and q = q0 + 1 iff ``frac > r * 2**-24`` with r the top 24 of the
     element's 32 random bits (``adaptopt._rounding``'s counter-based bits of
     seed, step, array and element index; ``bits >> 8``), else q0: up with
     probability frac (to 2**-24), the same on every ISA and thread count.

   The code is ``127 + q`` (signed, y >= 0), ``127 - q`` (signed, y < 0) or
   ``q`` (unsigned).

The new absmax of a block is that of the values being stored, found in the
same pass over the block (the staging layer holds the block's 256 new values
in an L1-resident array: compute, absmax, quantise).  Parameters below
:data:`MIN_SIZE` = 4096 elements keep float32 state (bitsandbytes' rule).

The C kernels (``csrc/quant.c.inc``) give the same codes and absmax bit for
bit; their tables (``csrc/quant.h``) are generated from this module by
``tools/gen_quant.py``.
"""

import numpy as np

from ._rounding import sr_bits  # noqa: F401  (the stochastic bits: sr_bits(key, n, start))

__all__ = ["BLOCK", "MIN_SIZE", "MAP_S", "MAP_U", "ZERO_CODE", "dynamic_map", "quantize",
           "dequantize", "n_blocks"]

BLOCK = 256
MIN_SIZE = 4096
_f32 = np.float32
_NAN_BITS = np.uint32(0x7FC00000)


def dynamic_map(signed):
    """bitsandbytes' ``create_dynamic_map(signed)`` (7 exponent bits, 8 bits), float32.

    For i = 0..6 the decade ``[0.1, 1] * 10**(i-6)`` gets ``n = 2**i`` (signed)
    or ``2**(i+1)`` (unsigned) values: the midpoints of
    ``torch.linspace(0.1, 1, n + 1)`` (float32), times ``float32(10**(i-6))``;
    the signed map adds their negatives; both add 0 and 1.  torch's CPU
    linspace computes ``start + step*k`` for k < (n+1)//2 and
    ``end - step*(n-k)`` above, each one fused multiply-add (one rounding):
    below, the float64 expression is exact (at most 32 significant bits), so
    rounding it once to float32 is that FMA.
    """
    start, end = _f32(0.1), _f32(1.0)
    out = []
    for i in range(7):
        n = 2 ** i if signed else 2 ** (i + 1)
        step = np.float64((end - start) / _f32(n))
        k = np.arange(n + 1, dtype=np.float64)
        edges = np.where(k < (n + 1) // 2, np.float64(start) + step * k,
                         np.float64(end) - step * (n - k)).astype(_f32)
        means = (edges[:-1] + edges[1:]) / _f32(2)
        out.append(_f32(10.0 ** (i - 6)) * means)
    pos = np.concatenate(out)
    values = np.concatenate([pos, -pos, [0, 1]] if signed else [pos, [0, 1]]).astype(_f32)
    values.sort()
    assert values.size == 256 and np.all(np.diff(values) > 0)
    return values


MAP_S = dynamic_map(True)
MAP_U = dynamic_map(False)
ZERO_CODE = {True: 127, False: 0}
assert np.array_equal(-MAP_S[127::-1], MAP_S[127:255])  # the negatives mirror the positives


def magnitudes(signed):
    """The magnitudes P of the map's non-negative side (signed: 129 values, 0 .. 1)."""
    return MAP_S[127:] if signed else MAP_U


def n_blocks(n):
    """The number of 256-element blocks (and absmax values) of n elements."""
    return -(-int(n) // BLOCK)


def _nearest(a, P):
    """Index of the P nearest to a (float32 >= 0), ties to the smaller: exact midpoints
    (a float64 holds the half-sum of two float32 exactly)."""
    mid = (P[:-1].astype(np.float64) + P[1:]) / 2
    return np.searchsorted(mid, a.astype(np.float64), side="left")  # #{mid < a}


def _stochastic(a, P, r24):
    """Down to P[q0] <= a, up to P[q0 + 1] iff (a - lo) / (hi - lo) > r24 * 2**-24."""
    q0 = np.searchsorted(P, a, side="right") - 1
    last = q0 >= P.size - 1
    lo = P[q0]
    hi = P[np.minimum(q0 + 1, P.size - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (a - lo) / (hi - lo)
    up = ~last & (frac > r24.astype(_f32) * _f32(2.0 ** -24))
    return q0 + up


def _codes(y, signed, bits):
    neg = (y.view(np.uint32) >> 31).astype(bool)
    a = np.abs(y)
    P = magnitudes(signed)
    if not signed:
        q = _nearest(a, P) if bits is None else _stochastic(a, P, bits >> 8)
        return np.where(neg, 0, q).astype(np.uint8)
    Pn = P[:128]
    if bits is None:
        qp, qn = _nearest(a, P), _nearest(a, Pn)
    else:
        qp, qn = _stochastic(a, P, bits >> 8), _stochastic(a, Pn, bits >> 8)
    return np.where(neg, 127 - qn, 127 + qp).astype(np.uint8)


def quantize(x, signed, bits=None):
    """(codes, absmax) of a float32 array x, block by block (see the module docstring).

    Parameters
    ----------
    x : ndarray of float32
        The values, any shape (read in C order).
    signed : bool
        The signed map (first moments) or the unsigned one (second moments).
    bits : ndarray of uint32, optional
        Per element, the random bits of stochastic rounding; None: nearest.

    Returns
    -------
    codes : ndarray of uint8, x's shape
    absmax : ndarray of float32, ``n_blocks(x.size)`` values
    """
    signed = bool(signed)
    flat = np.ascontiguousarray(x, dtype=_f32).reshape(-1)
    n, nb = flat.size, n_blocks(flat.size)
    blocks = np.zeros(nb * BLOCK, _f32)       # the last block padded with zeros:
    blocks[:n] = flat                         # |0| changes no absmax, its codes are dropped
    blocks = blocks.reshape(nb, BLOCK)
    finite = np.all(np.isfinite(blocks), axis=1)
    A = np.max(np.abs(np.where(finite[:, None], blocks, 0)), axis=1, initial=_f32(0))
    ok = finite & (A > 0)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        y = (blocks / np.where(ok, A, _f32(1))[:, None]).reshape(-1)[:n]
    r = None if bits is None else np.asarray(bits, np.uint32).reshape(-1)[:n]
    codes = np.where(np.repeat(ok, BLOCK)[:n], _codes(y, signed, r),
                     ZERO_CODE[signed]).astype(np.uint8)
    absmax = np.where(finite, A, _NAN_BITS.view(_f32)).astype(_f32)
    return codes.reshape(np.shape(x)), absmax


def dequantize(codes, absmax, signed):
    """float32 values of codes (any shape, C order) with one absmax per 256-block."""
    c = np.asarray(codes, np.uint8)
    flat = c.reshape(-1)
    scale = np.repeat(np.asarray(absmax, _f32), BLOCK)[:flat.size]
    return ((MAP_S if signed else MAP_U)[flat] * scale).reshape(c.shape)
