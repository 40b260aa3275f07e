/* adaptopt_rows_step(): one step of the touched rows of a 2-D table
 * (adaptopt.h).  A row is a contiguous run of cols elements, so the
 * algorithm's segment function (its .c.inc body, from the current ISA's
 * table) updates it given its pointers: no new update math here.  This
 * file checks the arguments, sums duplicated rows (rows.c.inc: in the
 * order given, so the sum is fixed), catches rows up (exact mode) and
 * spreads the rows over threads.
 *
 * Threads: one parallel loop over the distinct rows, static schedule; a
 * row's result depends only on its own inputs (its group's gradient rows,
 * in a fixed order, and its own state), never on which thread ran it, so
 * results are bitwise the same for any thread count.  Each thread has one
 * row of scratch for the sum of a duplicated row.  Serial below the
 * algorithm's adaptopt_step threshold (touched elements). */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Rows are scattered over a large table, so each is a DRAM miss the
 * hardware prefetcher cannot foresee: the loop asks for the rows of the
 * group ROWS_AHEAD positions on (parameter and state, every cache line;
 * its row_step entry) while it updates the current one, so their misses
 * overlap. */
#ifndef ADAPTOPT_ROWS_AHEAD
#define ADAPTOPT_ROWS_AHEAD 4
#endif
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(a) __builtin_prefetch((a), 1, 3)
#else
#define PREFETCH(a) ((void)(a))
#endif

static void prefetch_row(void *const *base, size_t nbuf, size_t r, size_t row_bytes,
                         const int64_t *row_step)
{
    for (size_t k = 0; k < nbuf; k++) {
        if (k == 1 || base[k] == NULL)
            continue;
        const char *a = (const char *)base[k] + r * row_bytes;
        for (size_t off = 0; off < row_bytes; off += 64)
            PREFETCH(a + off);
        PREFETCH(a + row_bytes - 1);
    }
    if (row_step != NULL)
        PREFETCH(row_step + r);
}

/* Every index in range, starts well formed, catch-up counters not ahead. */
static int rows_valid(size_t n_rows, size_t n_grads, const int64_t *rows, const int64_t *order,
                      const int64_t *starts, size_t n_groups, const int64_t *row_step,
                      long long t)
{
    if ((order == NULL) != (starts == NULL))
        return 0;
    if (order == NULL && n_groups != n_grads)
        return 0;
    if (starts != NULL && (starts[0] != 0 || (size_t)starts[n_groups] != n_grads))
        return 0;
    for (size_t i = 0; i < n_groups; i++) {
        if (rows[i] < 0 || (uint64_t)rows[i] >= n_rows)
            return 0;
        if (starts != NULL && starts[i + 1] <= starts[i])
            return 0;
        if (row_step != NULL && (row_step[rows[i]] < 0 || row_step[rows[i]] > t - 1))
            return 0;
    }
    if (order != NULL)
        for (size_t i = 0; i < n_grads; i++)
            if (order[i] < 0 || (uint64_t)order[i] >= n_grads)
                return 0;
    return 1;
}

int adaptopt_rows_step(int algo, int dtype, size_t n_rows, size_t cols, size_t nbuf,
                       void *const *base, size_t n_grads, const int64_t *rows,
                       const int64_t *order, const int64_t *starts, size_t n_groups,
                       int64_t *row_step, long long t, const adaptopt_rows_catchup *catchup,
                       const double *scal, size_t nscal, int flags, int n_threads)
{
    const adaptopt_algo_info *info = adaptopt_get_algo_info(algo);
    if (info == NULL || dtype < 0 || dtype >= ADAPTOPT_N_DTYPES || nbuf != (size_t)info->nbuf
        || nscal != (size_t)info->nscal || flags < 0 || flags >= (1 << info->nflags)
        || n_threads < 1 || t < 1 || (catchup == NULL) != (row_step == NULL)
        || (catchup != NULL && catchup->drift >= (int)nbuf)
        || (n_groups > 0 && (base[0] == NULL || base[1] == NULL || rows == NULL))
        || !rows_valid(n_rows, n_grads, rows, order, starts, n_groups, row_step, t))
        return ADAPTOPT_EINVAL;
    if (n_groups == 0 || cols == 0)
        return ADAPTOPT_OK;
    const adaptopt_table *tab = adaptopt_table_of(adaptopt_get_isa());
    const adaptopt_seg_fn f = tab->step[algo][dtype];
    const adaptopt_rows_fns *rf = &tab->rows[dtype];
    const size_t esize = dtype == ADAPTOPT_FLOAT32 ? sizeof(float) : sizeof(double);
    union { float f[ADAPTOPT_MAX_NSCAL]; double d[ADAPTOPT_MAX_NSCAL]; } sc;
    for (size_t k = 0; k < nscal; k++) {
        if (dtype == ADAPTOPT_FLOAT32)
            sc.f[k] = (float)scal[k];
        else
            sc.d[k] = scal[k];
    }
    int nt = n_threads > adaptopt_thread_limit() ? adaptopt_thread_limit() : n_threads;
    if (n_groups < 2 || n_groups * cols < adaptopt_get_threshold(algo, dtype))
        nt = 1;
#ifndef _OPENMP
    nt = 1;
#endif
    /* one row of scratch per thread, each on its own cache lines */
    const size_t stride = (cols * esize + 63) / 64 * 64;
    char *scratch = NULL;
    if (order != NULL) {
        scratch = malloc((size_t)nt * stride + 64);
        if (scratch == NULL)
            return ADAPTOPT_ENOMEM;
    }
    char *aligned = scratch ? scratch + (64 - (uintptr_t)scratch % 64) % 64 : NULL;
    const size_t row_bytes = cols * esize;
    ptrdiff_t i;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (i = 0; i < (ptrdiff_t)n_groups; i++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const size_t r = (size_t)rows[i];
        if (i + ADAPTOPT_ROWS_AHEAD < (ptrdiff_t)n_groups)
            prefetch_row(base, nbuf, (size_t)rows[i + ADAPTOPT_ROWS_AHEAD], row_bytes, row_step);
        void *b[ADAPTOPT_MAX_NBUF];
        for (size_t k = 0; k < nbuf; k++)
            b[k] = base[k] ? (char *)base[k] + r * row_bytes : NULL;
        if (order == NULL) {
            b[1] = (char *)base[1] + (size_t)i * row_bytes;
        } else {
            size_t s = (size_t)starts[i], cnt = (size_t)starts[i + 1] - s;
            if (cnt == 1) {
                b[1] = (char *)base[1] + (size_t)order[s] * row_bytes;
            } else {
                b[1] = aligned + (size_t)tid * stride;
                rf->sum(b[1], base[1], order + s, cnt, cols);
            }
        }
        if (catchup != NULL) {
            long long k = t - 1 - row_step[r];
            if (k > 0) {
                if (catchup->drift >= 0 && b[catchup->drift] != NULL) {
                    double mu = catchup->drift_mu;
                    double c = catchup->drift_lr * (mu * (1 - pow(mu, (double)k)) / (1 - mu));
                    rf->drift(b[0], b[catchup->drift], cols, c);
                }
                for (size_t q = 0; q < nbuf; q++)
                    if (q != 1 && b[q] != NULL && catchup->base[q] != 1.0)
                        rf->scale(b[q], cols, pow(catchup->base[q], (double)k));
            }
            row_step[r] = t;
        }
        f(b, 0, cols, &sc, flags);
    }
    free(scratch);
    return ADAPTOPT_OK;
}
