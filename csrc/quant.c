/* adaptopt_q8_quantize / adaptopt_q8_dequantize: whole arrays of 8-bit state,
 * block by block with the current ISA's codecs (quant.c.inc), blocks spread
 * over threads (each block's result depends on that block alone).  The front
 * ends use them to quantise a loaded float32 state and to give a float32
 * state back (state_dict(dequantize=True)); a step goes through the staging
 * layer instead, which calls the same codecs on the block it holds in L1. */
#include "internal.h"
#include "quant.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Serial below this many elements: a parallel region costs microseconds. */
#define Q8_PARALLEL_MIN (1 << 18)

static int q8_threads(int n_threads, size_t n)
{
    int cap = adaptopt_thread_limit();
    return n < Q8_PARALLEL_MIN ? 1 : n_threads > cap ? cap : n_threads;
}

int adaptopt_q8_quantize(const float *x, size_t n, uint8_t *codes, float *absmax,
                         int is_signed, int stochastic, uint32_t key, int n_threads)
{
    if (n_threads < 1 || (n && (!x || !codes || !absmax)))
        return ADAPTOPT_EINVAL;
    const adaptopt_q8_fns f = adaptopt_table_of(adaptopt_get_isa())->q8;
    const long long nb = (long long)((n + ADAPTOPT_Q8_BLOCK - 1) / ADAPTOPT_Q8_BLOCK);
    int nt = q8_threads(n_threads, n);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (long long b = 0; b < nb; b++) {
        size_t lo = (size_t)b * ADAPTOPT_Q8_BLOCK, len = n - lo;
        len = len < ADAPTOPT_Q8_BLOCK ? len : ADAPTOPT_Q8_BLOCK;
        f.store(x + lo, codes + lo, absmax + b, len, is_signed, stochastic, key, (uint64_t)lo);
    }
    return ADAPTOPT_OK;
}

int adaptopt_q8_dequantize(const uint8_t *codes, const float *absmax, size_t n, float *x,
                           int is_signed, int n_threads)
{
    if (n_threads < 1 || (n && (!x || !codes || !absmax)))
        return ADAPTOPT_EINVAL;
    const adaptopt_q8_fns f = adaptopt_table_of(adaptopt_get_isa())->q8;
    const long long nb = (long long)((n + ADAPTOPT_Q8_BLOCK - 1) / ADAPTOPT_Q8_BLOCK);
    int nt = q8_threads(n_threads, n);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (long long b = 0; b < nb; b++) {
        size_t lo = (size_t)b * ADAPTOPT_Q8_BLOCK, len = n - lo;
        len = len < ADAPTOPT_Q8_BLOCK ? len : ADAPTOPT_Q8_BLOCK;
        f.load(x + lo, codes + lo, absmax[b], len, is_signed);
    }
    return ADAPTOPT_OK;
}
