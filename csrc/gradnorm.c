/* adaptopt_grad_sumsq(): the reduction of the global gradient norm
 * (adaptopt.h), for gradient clipping (max_grad_norm) and the non-finite
 * check of mixed-precision training, as adaptopt._amp.sumsq computes it.
 *
 * One pass over the gradients: every block of ADAPTOPT_GRADNORM_BLOCK
 * elements (cut from each array's start) is summed by the ISA's loop
 * (gradnorm.c.inc) into its own slot, on any thread; the slots are then
 * added left to right.  Which thread ran a block never changes its sum, so
 * the result is bitwise the same for any thread count and ISA. */
#include <stdlib.h>

#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int adaptopt_grad_sumsq(size_t n_arrays, const int *types, const void *const *ptr,
                        const size_t *offsets, int n_threads, double *sumsq, int *nonfinite)
{
    if (n_threads < 1 || sumsq == NULL || nonfinite == NULL
        || (n_arrays > 0 && (types == NULL || ptr == NULL || offsets == NULL)))
        return ADAPTOPT_EINVAL;
    const size_t B = ADAPTOPT_GRADNORM_BLOCK;
    size_t nblk = 0;
    for (size_t i = 0; i < n_arrays; i++) {
        if (types[i] < ADAPTOPT_STORE_F32 || types[i] > ADAPTOPT_STORE_F16
            || offsets[i + 1] < offsets[i]
            || (ptr[i] == NULL && offsets[i + 1] > offsets[i]))
            return ADAPTOPT_EINVAL;
        nblk += (offsets[i + 1] - offsets[i] + B - 1) / B;
    }
    *sumsq = 0.0;
    *nonfinite = 0;
    if (nblk == 0)
        return ADAPTOPT_OK;
    /* part[k]: block k's sum; first[i]: array i's first block (first[n_arrays] = nblk) */
    double *part = malloc(nblk * sizeof(double) + (n_arrays + 1) * sizeof(size_t));
    if (part == NULL)
        return ADAPTOPT_ENOMEM;
    size_t *first = (size_t *)(part + nblk);
    first[0] = 0;
    for (size_t i = 0; i < n_arrays; i++)
        first[i + 1] = first[i] + (offsets[i + 1] - offsets[i] + B - 1) / B;
    const adaptopt_table *tab = adaptopt_table_of(adaptopt_get_isa());
    int bad = 0;
    int nt = n_threads > adaptopt_thread_limit() ? adaptopt_thread_limit() : n_threads;
#ifndef _OPENMP
    nt = 1;
#endif
    const int parallel = nt > 1 && nblk > 1 && offsets[n_arrays] >= ADAPTOPT_GRADNORM_THRESHOLD;
    (void)parallel;
    ptrdiff_t k;
#pragma omp parallel for schedule(static) num_threads(nt) if (parallel) reduction(| : bad)
    for (k = 0; k < (ptrdiff_t)nblk; k++) {
        size_t lo = 0, hi = n_arrays;  /* the array of block k: first[lo] <= k < first[lo+1] */
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (first[mid] <= (size_t)k) lo = mid; else hi = mid;
        }
        const size_t start = ((size_t)k - first[lo]) * B, n = offsets[lo + 1] - offsets[lo];
        const size_t m = n - start < B ? n - start : B;
        const int ty = types[lo];
        const size_t esize = ty == ADAPTOPT_STORE_F32 ? 4 : ty == ADAPTOPT_STORE_F64 ? 8 : 2;
        int b = 0;
        part[k] = tab->sumsq[ty]((const char *)ptr[lo] + start * esize, m, &b);
        bad |= b;
    }
    double s = 0.0;
    for (size_t j = 0; j < nblk; j++)
        s = s + part[j];
    free(part);
    *sumsq = s;
    *nonfinite = bad;
    return ADAPTOPT_OK;
}
