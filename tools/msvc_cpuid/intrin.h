/* A stand-in for MSVC's <intrin.h> on gcc, so that dispatch.c's _MSC_VER
 * CPU detection (__cpuid, __cpuidex, _xgetbv) can be compiled and run on
 * Linux next to the __builtin_cpu_supports one (tests/test_msvc_cpu_detection.py).
 * Same signatures and semantics as MSVC's. */
#ifndef ADAPTOPT_MSVC_SHIM_INTRIN_H
#define ADAPTOPT_MSVC_SHIM_INTRIN_H
#include <cpuid.h>
#define __forceinline inline __attribute__((always_inline))
/* gcc's <cpuid.h> has MSVC's __cpuidex(int[4], leaf, subleaf) already */
#undef __cpuid  /* <cpuid.h>'s macro of the same name takes five arguments */
static inline void __cpuid(int r[4], int leaf) { __cpuidex(r, leaf, 0); }
static inline unsigned long long _xgetbv(unsigned idx)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(idx));
    return ((unsigned long long)hi << 32) | lo;
}
#endif
