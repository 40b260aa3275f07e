"""The NumPy twin of csrc/convert.h: float32 to and from the 16-bit storage
formats, round to nearest even or stochastically, bit for bit as the
kernels do.  Values are handled as their bits (uint16 / uint32 arrays), so
no NumPy or ml_dtypes conversion decides a result here; the tests compare
these functions with ml_dtypes.bfloat16 and numpy.float16.

Stochastic rounding draws 32 bits per element from a counter-based hash:
``sr_bits(sr_key(seed, step, array_id, k), i)`` for element ``i`` of buffer
``k`` of parameter ``array_id`` in step ``step`` -- no generator state, so
the bits do not depend on threads, blocks or the ISA.  A value rounds away
from zero with probability equal to its dropped fraction."""

import numpy as np

__all__ = ["bf16_to_f32", "f32_to_bf16", "f16_to_f32", "f32_to_f16", "sr_key", "sr_bits",
           "f32_to_bf16_sr", "f32_to_f16_sr", "MIRROR_BUFFER"]

MIRROR_BUFFER = 15  # the buffer number of a master weight's 16-bit copy in sr_key
_M64 = (1 << 64) - 1


def _u32(x):
    return np.asarray(x, dtype=np.float32).reshape(-1).view(np.uint32)


def _f32(u):
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def bf16_to_f32(h):
    """float32 values of bfloat16 bits (uint16)."""
    return _f32(np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16))


def f32_to_bf16(x):
    """bfloat16 bits of float32 values, round to nearest even (NaN: a quiet NaN)."""
    u = _u32(x)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    q = (u >> np.uint32(16)) | np.uint32(0x40)
    return np.where((u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000), q, r).astype(np.uint16)


def f16_to_f32(h):
    """float32 values of float16 bits (uint16)."""
    h = np.asarray(h, dtype=np.uint16).reshape(-1).astype(np.uint32)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    e = (h >> np.uint32(10)) & np.uint32(0x1F)
    m = h & np.uint32(0x3FF)
    normal = sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))
    special = sign | np.uint32(0x7F800000) | (m << np.uint32(13))
    sub = sign | (m.astype(np.float32) * np.float32(2.0 ** -24)).view(np.uint32)
    return _f32(np.where(e == 31, special, np.where(e == 0, sub, normal)))


def f32_to_f16(x):
    """float16 bits of float32 values, round to nearest even (NaN: a quiet NaN)."""
    u = _u32(x)
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    u = u & np.uint32(0x7FFFFFFF)
    magic = np.float32(0.5)
    with np.errstate(over="ignore", invalid="ignore"):
        sub = (_f32(u) + magic).view(np.uint32) - magic.view(np.uint32)
        nrm = (u + np.uint32(0xC8000FFF) + ((u >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
    big = np.where(u > np.uint32(0x7F800000), np.uint32(0x7E00), np.uint32(0x7C00))
    o = np.where(u >= np.uint32(0x47800000), big, np.where(u < np.uint32(0x38800000), sub, nrm))
    return (o | sign).astype(np.uint16)


def _fmix64(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _M64
    return x ^ (x >> 33)


def sr_key(seed, step, array_id, k):
    """The 32-bit key of buffer k of parameter array_id in step step (Python ints)."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xD1B54A32D192ED03
         + array_id * 0x8CB92BA72F3D8DD7 + k * 0xB5AD4ECEDA1CE2A9) & _M64
    return _fmix64(x) & 0xFFFFFFFF


def sr_bits(key, n, start=0):
    """uint32 random bits of elements start .. start+n-1 under key."""
    i = np.arange(start, start + n, dtype=np.uint64)
    lo = (i & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (i >> np.uint64(32)).astype(np.uint32)
    x = (lo * np.uint32(0x9E3779B9)) ^ (hi * np.uint32(0x85EBCA77)) ^ np.uint32(key)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def f32_to_bf16_sr(x, r):
    """bfloat16 bits of float32 values, rounded stochastically with the bits r."""
    u = _u32(x)
    r = np.asarray(r, dtype=np.uint32)
    s = (u + (r & np.uint32(0xFFFF))) >> np.uint32(16)
    q = (u >> np.uint32(16)) | np.uint32(0x40)
    a = u & np.uint32(0x7FFFFFFF)
    out = np.where(a > np.uint32(0x7F800000), q,
                   np.where(a == np.uint32(0x7F800000), u >> np.uint32(16), s))
    return out.astype(np.uint16)


def f32_to_f16_sr(x, r):
    """float16 bits of float32 values, rounded stochastically with the bits r."""
    u = _u32(x)
    r = np.asarray(r, dtype=np.uint32)
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    u = u & np.uint32(0x7FFFFFFF)
    t = u + (r & np.uint32(0x1FFF))
    nrm = np.where(t >= np.uint32(0x47800000), np.uint32(0x7C00),
                   (t - np.uint32(0x38000000)) >> np.uint32(13))
    with np.errstate(over="ignore", invalid="ignore"):
        y = _f32(u) * np.float32(2.0 ** 24)
        small = u < np.uint32(0x38800000)
        y = np.where(small, y, np.float32(0))
        m = y.astype(np.int32).astype(np.float32)
        frac = ((y - m) * np.float32(2.0 ** 32)).astype(np.uint32)
    sub = m.astype(np.uint32) + (frac > r).astype(np.uint32)
    big = np.where(u > np.uint32(0x7F800000), np.uint32(0x7E00), np.uint32(0x7C00))
    o = np.where(u >= np.uint32(0x7F800000), big, np.where(small, sub, nrm))
    return (o | sign).astype(np.uint16)
