/* Conversions between float32 and the 16-bit storage formats, and the
 * counter-based random bits of stochastic rounding: plain integer and
 * float code, the same on every ISA (each kernels_<isa>.c compiles it with
 * its own flags, and the compiler vectorises the block loops that use it).
 * The NumPy twin is adaptopt/_rounding.py.
 *
 * Round to nearest, ties to even: bfloat16 by the carry of the dropped 16
 * bits; float16 by Giesen's float_to_half_fast3_rtne (normal range: the
 * same carry on the 13 dropped bits after rebiasing the exponent;
 * subnormal range: a float addition of a magic number, which rounds).  NaN
 * stays NaN (quiet; which NaN is not specified), infinities stay, overflow
 * gives infinity.
 *
 * Stochastic rounding rounds away from zero with probability equal to the
 * dropped fraction, from 32 random bits per element: bits(key, i) hashes
 * the element index i with a key that hashes (seed, step, array id,
 * buffer) -- no state, so any thread computes any element's bits. */
#ifndef ADAPTOPT_CONVERT_H
#define ADAPTOPT_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t adaptopt_f32_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float adaptopt_bits_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

static inline float adaptopt_bf16_to_f32(uint16_t h) { return adaptopt_bits_f32((uint32_t)h << 16); }

/* Written for cheap vector code: one float compare finds NaN, one blend,
 * one shift (x != x is (bits & 0x7FFFFFFF) > 0x7F800000). */
static inline uint16_t adaptopt_f32_to_bf16(float x)
{
    uint32_t u = adaptopt_f32_bits(x);
    uint32_t r = u + 0x7FFFu + ((u >> 16) & 1u);
    uint32_t q = u | 0x00400000u;                        /* NaN: quiet */
    return (uint16_t)((x != x ? q : r) >> 16);
}

static inline float adaptopt_f16_to_f32(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16, e = ((uint32_t)h >> 10) & 0x1Fu;
    uint32_t m = (uint32_t)h & 0x3FFu;
    uint32_t normal = sign | ((e + 112u) << 23) | (m << 13);
    uint32_t special = sign | 0x7F800000u | (m << 13);   /* inf, NaN */
    /* m * 2^-24 = (2^-14 + m * 2^-24) - 2^-14, both exact (no int-to-float) */
    uint32_t sub = sign | adaptopt_f32_bits(adaptopt_bits_f32(0x38800000u | (m << 13)) - 0x1p-14f);
    return adaptopt_bits_f32(e == 31u ? special : e == 0u ? sub : normal);
}

static inline uint16_t adaptopt_f32_to_f16(float x)
{
    uint32_t u = adaptopt_f32_bits(x), sign = (u >> 16) & 0x8000u;
    u &= 0x7FFFFFFFu;
    /* subnormal or zero result: the float addition rounds to nearest even */
    const float magic = 0x1p-1f;  /* ((127 - 15) + (23 - 10) + 1) << 23 */
    uint32_t sub = adaptopt_f32_bits(adaptopt_bits_f32(u) + magic) - adaptopt_f32_bits(magic);
    uint32_t nrm = (u + 0xC8000FFFu + ((u >> 13) & 1u)) >> 13;  /* (15-127)<<23 + 0xFFF */
    uint32_t big = u > 0x7F800000u ? 0x7E00u : 0x7C00u;  /* NaN, inf / overflow */
    uint32_t o = u >= 0x47800000u ? big : u < 0x38800000u ? sub : nrm;
    return (uint16_t)(o | sign);
}

static inline uint64_t adaptopt_fmix64(uint64_t x)
{
    x ^= x >> 33; x *= 0xFF51AFD7ED558CCDull; x ^= x >> 33; x *= 0xC4CEB9FE1A85EC53ull;
    return x ^ (x >> 33);
}

static inline uint32_t adaptopt_fmix32(uint32_t x)
{
    x ^= x >> 16; x *= 0x85EBCA6Bu; x ^= x >> 13; x *= 0xC2B2AE35u;
    return x ^ (x >> 16);
}

/* The key of one buffer of one array in one step (k: the buffer, 15: the mirror). */
static inline uint32_t adaptopt_sr_key(uint64_t seed, uint64_t step, uint64_t array_id, uint64_t k)
{
    return (uint32_t)adaptopt_fmix64(seed * 0x9E3779B97F4A7C15ull + step * 0xD1B54A32D192ED03ull
                                     + array_id * 0x8CB92BA72F3D8DD7ull
                                     + k * 0xB5AD4ECEDA1CE2A9ull);
}

static inline uint32_t adaptopt_sr_bits(uint32_t key, uint64_t i)
{
    return adaptopt_fmix32(((uint32_t)i * 0x9E3779B9u) ^ ((uint32_t)(i >> 32) * 0x85EBCA77u) ^ key);
}

static inline uint16_t adaptopt_f32_to_bf16_sr(float x, uint32_t r)
{
    uint32_t u = adaptopt_f32_bits(x);
    uint32_t s = (u + (r & 0xFFFFu)) >> 16;
    uint32_t q = (u >> 16) | 0x40u;
    uint32_t keep = u >> 16;                                 /* inf stays inf */
    uint32_t a = u & 0x7FFFFFFFu;
    return (uint16_t)(a > 0x7F800000u ? q : a == 0x7F800000u ? keep : s);
}

static inline uint16_t adaptopt_f32_to_f16_sr(float x, uint32_t r)
{
    uint32_t u = adaptopt_f32_bits(x), sign = (u >> 16) & 0x8000u;
    u &= 0x7FFFFFFFu;
    uint32_t t = u + (r & 0x1FFFu);                           /* normal range: truncate */
    uint32_t nrm = t >= 0x47800000u ? 0x7C00u : (t - 0x38000000u) >> 13;
    float y = adaptopt_bits_f32(u) * 0x1p24f;                 /* subnormal range: exact */
    float m = (float)(int32_t)y;                              /* floor: y >= 0, < 2^10 */
    uint32_t up = (uint32_t)((y - m) * 0x1p32f) > r;
    uint32_t sub = (uint32_t)(int32_t)m + up;
    uint32_t big = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
    uint32_t o = u >= 0x7F800000u ? big : u < 0x38800000u ? sub : nrm;
    return (uint16_t)(o | sign);
}

#endif
