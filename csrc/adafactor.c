/* adaptopt_adafactor_step(): one Adafactor step of one parameter
 * (torch.optim.Adafactor, torch 2.13, _single_tensor_adafactor), as
 * adaptopt.algorithms.adafactor.update computes it.  The loops are per ISA
 * (adafactor.c.inc, through each ISA's table); this file orders the passes,
 * spreads them over threads and computes the step's scalars in double:
 *
 *   alpha = max(eps2, sqrt(P)/sqrt(n)) * rho     P = double sum of the
 *                                                per-row (per-chunk) p^2 sums
 *   denom = max(1, sqrt(U)/(sqrt(n)*d))          U = the same for u^2
 *   s = -alpha/denom                             p = p(*decay) + s*u
 *
 * max(a, b) is Python's (b if b > a else a: NaN loses), as torch computes
 * these in Python floats; P and U are summed left to right in row (chunk)
 * order.
 *
 * Factored parameters, passes (each a parallel loop over fixed blocks of
 * ADAPTOPT_ADAFACTOR_ROW_BLOCK rows of one matrix, so a block's sums never
 * depend on which thread ran it):
 *   A  read p, g: row sums of g^2 and p^2, each block's column partials
 *      then (serial, O(rows + cols*blocks)): row_var and col_var lerps,
 *      the clamped row_var mean of each matrix, alpha
 *   B  read g: row sums of u^2 (u recomputed, never stored), then denom
 *   C  read p, g, write p
 * Unfactored: pass A reads p and g, updates variance and sums p^2 and u^2
 * per chunk of ADAPTOPT_ADAFACTOR_CHUNK elements; pass C as above.
 * Traffic per element: factored 3 reads of g, 2 of p, 1 write (float32:
 * 24 bytes); unfactored 2, 2, 1 plus variance read twice and written once. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

const adaptopt_table *adaptopt_table_of(int isa)
{
    switch (isa) {
#ifdef ADAPTOPT_HAVE_AVX512
    case ADAPTOPT_ISA_AVX512: return &adaptopt_table_avx512;
#endif
#ifdef ADAPTOPT_HAVE_AVX2
    case ADAPTOPT_ISA_AVX2: return &adaptopt_table_avx2;
#endif
    default: return &adaptopt_table_scalar;
    }
}

static double pymax(double a, double b) { return b > a ? b : a; }

#define AT(ptr, i) ((void *)((char *)(ptr) + (size_t)(i) * esize))
#define CAT(ptr, i) ((const void *)((const char *)(ptr) + (size_t)(i) * esize))

int adaptopt_adafactor_step(int dtype, size_t batch, size_t rows, size_t cols,
                            void *p, const void *g, void *row_var, void *col_var,
                            void *variance, const double *scal, size_t nscal, int flags,
                            int n_threads)
{
    if (dtype < 0 || dtype >= ADAPTOPT_N_DTYPES || nscal != ADAPTOPT_ADAFACTOR_NSCAL
        || flags < 0 || flags > 3 || n_threads < 1
        || (variance == NULL && (row_var == NULL || col_var == NULL))
        || (variance != NULL && (batch != 1 || rows != 1)))
        return ADAPTOPT_EINVAL;
    const size_t n = batch * rows * cols;
    if (n == 0)
        return ADAPTOPT_OK;
    const adaptopt_adafactor_fns *f = &adaptopt_table_of(adaptopt_get_isa())->adafactor[dtype];
    const size_t esize = dtype == ADAPTOPT_FLOAT32 ? sizeof(float) : sizeof(double);
    const double w = scal[ADAPTOPT_ADAFACTOR_SC_one_minus_beta2];
    const double rho = scal[ADAPTOPT_ADAFACTOR_SC_rho];
    double eps1 = scal[ADAPTOPT_ADAFACTOR_SC_eps1];
    const double eps2 = scal[ADAPTOPT_ADAFACTOR_SC_eps2], d = scal[ADAPTOPT_ADAFACTOR_SC_d];
    const double decay = scal[ADAPTOPT_ADAFACTOR_SC_decay];
    if (eps1 < 0)
        eps1 = dtype == ADAPTOPT_FLOAT32 ? (double)FLT_EPSILON : DBL_EPSILON;
    const double eps1_sq = eps1 * eps1;
    int nt = n_threads > adaptopt_thread_limit() ? adaptopt_thread_limit() : n_threads;
#ifdef _OPENMP
    if (nt > adaptopt_thread_limit())
        nt = adaptopt_thread_limit();
#else
    nt = 1;
#endif
    /* kk: the TYPE scalars of passes B and C: rm (per matrix), eps1^2, decay, s */
    union { float f[4]; double d[4]; } kk;
#define SET_KK(i, v) do { if (dtype == ADAPTOPT_FLOAT32) kk.f[i] = (float)(v); \
                          else kk.d[i] = (v); } while (0)
    const double sqrt_n = sqrt((double)n);

    if (variance != NULL) {  /* ---- unfactored ---- */
        const size_t CH = ADAPTOPT_ADAFACTOR_CHUNK, nch = (n + CH - 1) / CH;
        char *scratch = malloc(2 * nch * esize);
        if (!scratch)
            return ADAPTOPT_ENOMEM;
        void *psq = scratch, *usq = scratch + nch * esize;
        union { float f[2]; double d[2]; } ka;
        if (dtype == ADAPTOPT_FLOAT32) { ka.f[0] = (float)w; ka.f[1] = (float)eps1_sq; }
        else { ka.d[0] = w; ka.d[1] = eps1_sq; }
        ptrdiff_t k;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nch > 1)
        for (k = 0; k < (ptrdiff_t)nch; k++) {
            size_t lo = (size_t)k * CH, m = n - lo < CH ? n - lo : CH;
            f->vec_reduce(CAT(p, lo), CAT(g, lo), AT(variance, lo), m, &ka, AT(psq, k),
                          AT(usq, k), flags);
        }
        double alpha = pymax(eps2, sqrt(f->sum(psq, nch)) / sqrt_n) * rho;
        double denom = pymax(1.0, sqrt(f->sum(usq, nch)) / (sqrt_n * d));
        SET_KK(1, eps1_sq);
        SET_KK(2, decay);
        SET_KK(3, -alpha / denom);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nch > 1)
        for (k = 0; k < (ptrdiff_t)nch; k++) {
            size_t lo = (size_t)k * CH, m = n - lo < CH ? n - lo : CH;
            f->vec_update(AT(p, lo), CAT(g, lo), CAT(variance, lo), m, &kk, flags);
        }
        free(scratch);
        return ADAPTOPT_OK;
    }

    /* ---- factored ---- */
    const size_t RB = ADAPTOPT_ADAFACTOR_ROW_BLOCK, bpm = (rows + RB - 1) / RB;
    const size_t nblk = batch * bpm, nrows = batch * rows;
    /* rowsq, psq, usq: nrows each; rm: batch; colp: nblk*cols */
    char *scratch = malloc((3 * nrows + batch + nblk * cols) * esize);
    if (!scratch)
        return ADAPTOPT_ENOMEM;
    void *rowsq = scratch, *psq = AT(scratch, nrows), *usq = AT(scratch, 2 * nrows);
    void *rm = AT(scratch, 3 * nrows), *colp = AT(scratch, 3 * nrows + batch);
    ptrdiff_t k;
#define BLOCK_ROWS(k, b, r0, m) size_t b = (size_t)(k) / bpm, r0 = ((size_t)(k) % bpm) * RB, \
                                       m = rows - r0 < RB ? rows - r0 : RB
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nblk > 1)
    for (k = 0; k < (ptrdiff_t)nblk; k++) {
        BLOCK_ROWS(k, b, r0, m);
        size_t row = b * rows + r0;
        f->rows_reduce(CAT(p, row * cols), CAT(g, row * cols), cols, m, AT(rowsq, row),
                       AT(psq, row), AT(colp, (size_t)k * cols));
    }
    f->rows_lerp(row_var, rowsq, nrows, cols, w);
    /* columns of each matrix, in chunks of 1024 over threads */
    const size_t CC = 1024, cpm = (cols + CC - 1) / CC;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && batch * cpm > 1)
    for (k = 0; k < (ptrdiff_t)(batch * cpm); k++) {
        size_t b = (size_t)k / cpm, c0 = ((size_t)k % cpm) * CC;
        size_t m = cols - c0 < CC ? cols - c0 : CC;
        f->cols_finish(CAT(colp, b * bpm * cols + c0), bpm, cols, m, AT(col_var, b * cols + c0),
                       rows, w);
    }
    for (size_t b = 0; b < batch; b++)
        f->rv_mean(CAT(row_var, b * rows), rows, eps1, AT(rm, b));
    double alpha = pymax(eps2, sqrt(f->sum(psq, nrows)) / sqrt_n) * rho;
    SET_KK(1, eps1_sq);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nblk > 1) firstprivate(kk)
    for (k = 0; k < (ptrdiff_t)nblk; k++) {
        BLOCK_ROWS(k, b, r0, m);
        size_t row = b * rows + r0;
        if (dtype == ADAPTOPT_FLOAT32) kk.f[0] = ((const float *)rm)[b];
        else kk.d[0] = ((const double *)rm)[b];
        f->rows_unorm(CAT(g, row * cols), cols, m, CAT(row_var, row), CAT(col_var, b * cols),
                      &kk, AT(usq, row), flags);
    }
    double denom = pymax(1.0, sqrt(f->sum(usq, nrows)) / (sqrt_n * d));
    SET_KK(2, decay);
    SET_KK(3, -alpha / denom);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nblk > 1) firstprivate(kk)
    for (k = 0; k < (ptrdiff_t)nblk; k++) {
        BLOCK_ROWS(k, b, r0, m);
        size_t row = b * rows + r0;
        if (dtype == ADAPTOPT_FLOAT32) kk.f[0] = ((const float *)rm)[b];
        else kk.d[0] = ((const double *)rm)[b];
        f->rows_update(AT(p, row * cols), CAT(g, row * cols), cols, m, CAT(row_var, row),
                       CAT(col_var, b * cols), &kk, flags);
    }
#undef BLOCK_ROWS
#undef SET_KK
    free(scratch);
    return ADAPTOPT_OK;
}
