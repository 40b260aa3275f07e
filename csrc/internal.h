/* Internal to the kernels: the segment-function type, name pasting, and
 * the switch that instantiates a kernel body once per flag combination so
 * that every flag test is a compile-time constant inside the loop. */
#ifndef ADAPTOPT_INTERNAL_H
#define ADAPTOPT_INTERNAL_H

#include "adaptopt.h"

/* Update elements [off, off+n) of one array; b[k] is its buffer k, sc the
 * scalars already cast to the array's type. */
typedef void (*adaptopt_seg_fn)(void *const *b, size_t off, size_t n,
                                const void *sc, int flags);

/* Adafactor's loops for one ISA and dtype (adafactor.c.inc; adafactor.c
 * runs them).  Pointers are to the dtype's elements; kk holds TYPE scalars. */
typedef struct {
    void (*rows_reduce)(const void *p, const void *g, size_t cols, size_t nrows,
                        void *rowsq, void *psq, void *colp);
    void (*rows_lerp)(void *rv, const void *rowsq, size_t n, size_t cols, double w);
    void (*cols_finish)(const void *colp, size_t nblk, size_t stride, size_t ncols,
                        void *cv, size_t rows, double w);
    void (*rv_mean)(const void *rv, size_t rows, double eps1, void *out);
    double (*sum)(const void *x, size_t n);
    void (*rows_unorm)(const void *g, size_t cols, size_t nrows, const void *rv,
                       const void *cv, const void *kk, void *usq, int flags);
    void (*rows_update)(void *p, const void *g, size_t cols, size_t nrows, const void *rv,
                        const void *cv, const void *kk, int flags);
    void (*vec_reduce)(const void *p, const void *g, void *var, size_t n, const void *kk,
                       void *psq, void *usq, int flags);
    void (*vec_update)(void *p, const void *g, const void *var, size_t n, const void *kk,
                       int flags);
} adaptopt_adafactor_fns;
#define ADAPTOPT_ADAFACTOR_FNS_(s)                                                     \
    {af_rows_reduce_##s, af_rows_lerp_##s, af_cols_finish_##s, af_rv_mean_##s, af_sum_##s, \
     af_rows_unorm_##s, af_rows_update_##s, af_vec_reduce_##s, af_vec_update_##s}

/* 8-bit state, one block of <= ADAPTOPT_Q8_BLOCK elements (quant.c.inc). */
typedef struct {
    void (*load)(float *dst, const uint8_t *codes, float absmax, size_t n, int is_signed);
    void (*store)(const float *src, uint8_t *codes, float *absmax, size_t n, int is_signed,
                  int stochastic, uint32_t key, uint64_t index0);
} adaptopt_q8_fns;

/* The staging layer for one compute type (staging.c.inc): f over the
 * elements [off, off+n) of one array whose buffers b (and aux) are stored
 * as st says. */
typedef void (*adaptopt_staged_fn)(adaptopt_seg_fn f, void *const *b, void *const *aux,
                                   size_t nbuf, size_t off, size_t n, const void *sc,
                                   int flags, const adaptopt_staging *st, uint64_t array_id,
                                   const int64_t *gdesc);

/* adaptopt_rows_step()'s loops for one ISA and dtype (rows.c.inc; rows.c
 * runs them). */
typedef struct {
    void (*sum)(void *acc, const void *g, const int64_t *order, size_t cnt, size_t cols);
    void (*scale)(void *x, size_t n, double f);
    void (*drift)(void *p, const void *buf, size_t n, double c);
} adaptopt_rows_fns;
#define ADAPTOPT_ROWS_FNS_(s) {rows_sum_##s, rows_scale_##s, rows_drift_##s}

/* One ISA's kernels: per algorithm (algorithms.h order) and dtype, the
 * benchmark-only roofline kernel per dtype, Adafactor's loops, the row
 * updates' loops, the 8-bit state's block codecs and the gradient norm's
 * block sum. */
typedef struct {
    adaptopt_seg_fn step[ADAPTOPT_N_ALGOS][ADAPTOPT_N_DTYPES];
    adaptopt_seg_fn roofline[ADAPTOPT_N_DTYPES];
    adaptopt_adafactor_fns adafactor[ADAPTOPT_N_DTYPES];
    adaptopt_q8_fns q8;
    adaptopt_staged_fn staged[ADAPTOPT_N_DTYPES];
    adaptopt_rows_fns rows[ADAPTOPT_N_DTYPES];
    /* gradnorm.c.inc: sum of squares of one block in float64, per storage
     * type (F32..F16; NULL for the others); *bad = 1 if non-finite */
    double (*sumsq[ADAPTOPT_STORE_F16 + 1])(const void *x, size_t n, int *bad);
    /* per algorithm, its float32 body with every buffer stored as
     * bfloat16, rounded to nearest even (kernels.c.inc) */
    adaptopt_seg_fn step_bf16[ADAPTOPT_N_ALGOS];
} adaptopt_table;

extern const adaptopt_table adaptopt_table_scalar;
extern const adaptopt_table adaptopt_table_avx2;
extern const adaptopt_table adaptopt_table_avx512;
/* The table of a compiled ISA (the scalar one for any other value). */
const adaptopt_table *adaptopt_table_of(int isa);

#define ADAPTOPT_CAT_(a, b) a##b
#define ADAPTOPT_CAT(a, b) ADAPTOPT_CAT_(a, b)

#if defined(_MSC_VER)
#define ADAPTOPT_INLINE static __forceinline
#define restrict __restrict
#define ADAPTOPT_PREFETCH(addr, write) ((void)(addr), (void)(write))
#else
#define ADAPTOPT_INLINE static inline __attribute__((always_inline))
/* A hint only: the cache line holding addr, for reading or for writing. */
#define ADAPTOPT_PREFETCH(addr, write) __builtin_prefetch((addr), (write), 0)
#endif

/* NaN-propagating maximum with np.maximum's semantics. */
#define ADAPTOPT_MAXIMUM(a, b) (((a) >= (b) || (a) != (a)) ? (a) : (b))

/* CALL(f) once per flag value 0..31, f a constant expression. */
#define ADAPTOPT_SWITCH_FLAGS(flags, CALL) switch (flags) {                        \
    case 0: CALL(0); break;   case 1: CALL(1); break;   case 2: CALL(2); break;    \
    case 3: CALL(3); break;   case 4: CALL(4); break;   case 5: CALL(5); break;    \
    case 6: CALL(6); break;   case 7: CALL(7); break;   case 8: CALL(8); break;    \
    case 9: CALL(9); break;   case 10: CALL(10); break; case 11: CALL(11); break;  \
    case 12: CALL(12); break; case 13: CALL(13); break; case 14: CALL(14); break;  \
    case 15: CALL(15); break; case 16: CALL(16); break; case 17: CALL(17); break;  \
    case 18: CALL(18); break; case 19: CALL(19); break; case 20: CALL(20); break;  \
    case 21: CALL(21); break; case 22: CALL(22); break; case 23: CALL(23); break;  \
    case 24: CALL(24); break; case 25: CALL(25); break; case 26: CALL(26); break;  \
    case 27: CALL(27); break; case 28: CALL(28); break; case 29: CALL(29); break;  \
    case 30: CALL(30); break; case 31: CALL(31); break; default: break; }

#endif
