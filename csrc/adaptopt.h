/* adaptopt: the C API of the fused optimizer kernels.
 *
 * One entry point, adaptopt_step(), updates a batch of arrays in a single
 * pass over memory: for each element it reads the parameter, the gradient
 * and the state once and writes the parameter and the state once.  No
 * allocation, no temporaries, never writes the gradient.
 *
 * A batch is n_arrays arrays that share the algorithm, dtype, flags and
 * scalars.  ptr[i*nbuf + k] is buffer k of array i, in the algorithm's
 * order (algorithms.h: p, g, then its buffers); array i has
 * offsets[i+1] - offsets[i] elements (offsets[0] = 0).  Buffers an
 * algorithm does not use under the given flags may be NULL.  flags may
 * only have the algorithm's public flag bits.
 *
 * scal[] holds the per-step scalars in double, computed by the caller the
 * way the NumPy reference computes them; they are cast to the array's dtype
 * exactly as NumPy casts a Python float (round to nearest).
 */
#ifndef ADAPTOPT_H
#define ADAPTOPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "algorithms.h"

enum adaptopt_dtype { ADAPTOPT_FLOAT32, ADAPTOPT_FLOAT64, ADAPTOPT_N_DTYPES };

enum adaptopt_isa { ADAPTOPT_ISA_SCALAR, ADAPTOPT_ISA_AVX2, ADAPTOPT_ISA_AVX512, ADAPTOPT_N_ISAS };

/* What algorithms.h says of one algorithm, for callers in other languages:
 * names are comma-separated, in kernel order; buffers include p and g. */
typedef struct {
    const char *name;
    const char *buffers;   /* "p,g,exp_avg,..." */
    const char *scalars;   /* "one_minus_beta1,beta2,..." */
    const char *flags;     /* "maximize,l2,...": the k-th is bit k */
    int nbuf, nscal, nflags;
} adaptopt_algo_info;

/* NULL for an algorithm out of range. */
const adaptopt_algo_info *adaptopt_get_algo_info(int algo);

/* Error codes. */
#define ADAPTOPT_OK           0
#define ADAPTOPT_EINVAL      -1  /* bad algo, dtype, flags, nbuf, nscal or n_threads */
#define ADAPTOPT_ENOISA      -2  /* the ISA was not compiled in            */
#define ADAPTOPT_ECPU        -3  /* the ISA was compiled in, the CPU lacks it */

int adaptopt_step(int algo, int dtype, size_t n_arrays, size_t nbuf,
                  void *const *ptr, const size_t *offsets,
                  const double *scal, size_t nscal, int flags, int n_threads);

/* Staged steps: the same algorithms over buffers stored in another type
 * than the arithmetic's (16-bit parameters, gradients and state, float32
 * gradients into float64 parameters, float32 master weights with a 16-bit
 * copy), with the gradient unscaled and clipped on the fly -- all in the one
 * pass (staging.c.inc says how).
 *
 * compute: the arithmetic's type (ADAPTOPT_FLOAT32 / FLOAT64), in which the
 * scalars are cast.  storage[k]: how buffer k is stored (COMPUTE: in that
 * type).  16-bit storage needs float32 arithmetic.  stochastic[k]: buffer k
 * (p or state, 16-bit) is stored with stochastic rounding (convert.h: the
 * bits hash seed, step, array_ids[i] and k).  mirror: 0, or the 16-bit
 * storage of aux[i*nbuf + 0], written from the new p (p: the float32
 * master).  grad_div: 0, or g = g / grad_div; grad_mul: 1, or g = g *
 * grad_mul after it; grad_writeback: the scaled g is stored back (torch's
 * fused AMP leaves the unscaled gradient in .grad), the one case where g is
 * written.  aux: nbuf pointers per array, or NULL when no buffer needs one. */
enum adaptopt_storage {
    ADAPTOPT_STORE_COMPUTE = 0,
    ADAPTOPT_STORE_F32, ADAPTOPT_STORE_F64, ADAPTOPT_STORE_BF16, ADAPTOPT_STORE_F16,
    /* 8-bit block state (state buffers, float32 compute): uint8 codes, aux[k]
     * its float32 absmax per 256-block; quant.c.inc, adaptopt._quant */
    ADAPTOPT_STORE_Q8_SIGNED, ADAPTOPT_STORE_Q8_UNSIGNED,
    ADAPTOPT_N_STORAGES
};
#define ADAPTOPT_BLOCK 256  /* staging block, from each array's start */

typedef struct {
    int compute;
    unsigned char storage[ADAPTOPT_MAX_NBUF];
    unsigned char stochastic[ADAPTOPT_MAX_NBUF];
    int mirror, mirror_stochastic;
    uint64_t seed, step;
    const uint64_t *array_ids;  /* n_arrays; NULL: 0, 1, 2, ... */
    double grad_div, grad_mul;
    int grad_writeback;
    /* NULL, or per array a strided gradient's descriptor (or NULL), as
     * adaptopt_step_strided's gdesc: gathered per block, then converted */
    const int64_t *const *gdesc;
} adaptopt_staging;

int adaptopt_step_staged(int algo, const adaptopt_staging *st, size_t n_arrays, size_t nbuf,
                         void *const *ptr, void *const *aux, const size_t *offsets,
                         const double *scal, size_t nscal, int flags, int n_threads);

/* adaptopt_step with gradients stored in another element order than their
 * parameters (other strides, stride 0, slices).  gdesc[i] NULL: array i's
 * gradient is at ptr[i*nbuf + 1] in its parameter's element order, as in
 * adaptopt_step.  Else gdesc[i] = {ndim, shape[0..ndim), strides[0..ndim)}:
 * element x of the parameter's memory (x in C order over shape, whose
 * product must be the array's size; 1 <= ndim <= ADAPTOPT_MAX_NDIM) has
 * its gradient at byte ptr[i*nbuf + 1] + sum_k idx_k * strides[k].  The
 * gradient is gathered, per block of elements, into a local array (one
 * bounded copy inside the pass); results equal adaptopt_step's on the same
 * values, bit for bit. */
#define ADAPTOPT_MAX_NDIM 64
int adaptopt_step_strided(int algo, int dtype, size_t n_arrays, size_t nbuf,
                          void *const *ptr, const int64_t *const *gdesc, const size_t *offsets,
                          const double *scal, size_t nscal, int flags, int n_threads);

/* The contention guard (dispatch.c): a parallel region that takes longer
 * than its serial estimate sends steps to one thread for a while.  On by
 * default; set returns the previous setting (off: regions are neither
 * timed nor sent to one thread; what the guard saw is kept for when it is
 * on again); trips counts the slow regions seen. */
int adaptopt_set_thread_guard(int on);
long long adaptopt_thread_guard_trips(void);

/* Benchmarks only: the cheapest kernel with an optimizer's memory traffic.
 * Buffer 1 is read; buffers 0 and 2..n_rw are read and written (x += r);
 * nbuf is 5 in ptr; runs on the same threads and cuts as adaptopt_step. */
int adaptopt_roofline(int dtype, size_t n_arrays, void *const *ptr, const size_t *offsets,
                      int n_rw, int n_threads);

/* Adafactor (torch.optim.Adafactor's definition; csrc/adafactor.c).  Not
 * elementwise, so not an adaptopt_step algorithm: one call is one step of
 * ONE parameter, in three passes (reductions, update norm, update).
 *
 * Factored (the parameter has >= 2 dims): p and g are batch x rows x cols
 * (the leading dims flattened into batch), row_var has batch*rows elements,
 * col_var batch*cols, variance is NULL.  Unfactored (0-D or 1-D): batch =
 * rows = 1, cols = the element count, row_var = col_var = NULL, variance
 * has cols elements.  All C-contiguous, of the dtype; g is never written.
 *
 * scal[ADAPTOPT_ADAFACTOR_NSCAL], in double, in this order:
 *   one_minus_beta2   t^beta2_decay (the lerp weight)
 *   rho               min(lr, 1/sqrt(t))
 *   eps1              < 0: the dtype's machine epsilon (torch's eps1=None)
 *   eps2, d           as torch
 *   decay             1 - lr*weight_decay, used under ADAPTOPT_ADAFACTOR_DECAY
 * flags: ADAPTOPT_ADAFACTOR_MAXIMIZE | ADAPTOPT_ADAFACTOR_DECAY.
 *
 * The result is bitwise independent of n_threads and the ISA (fixed block
 * sizes and reduction order: adafactor.c.inc).  n_threads is used as given
 * (clamped to adaptopt_thread_limit()): no size threshold, the caller
 * decides.  Allocates O(batch*rows + batch*ceil(rows/64)*cols) scratch;
 * returns ADAPTOPT_ENOMEM if that fails. */
#define ADAPTOPT_ENOMEM      -4
#define ADAPTOPT_ADAFACTOR_SCALARS(E) \
    E(one_minus_beta2) E(rho) E(eps1) E(eps2) E(d) E(decay)
#define ADAPTOPT_ADAFACTOR_SC_ENUM_(x) ADAPTOPT_ADAFACTOR_SC_##x,
enum { ADAPTOPT_ADAFACTOR_SCALARS(ADAPTOPT_ADAFACTOR_SC_ENUM_) ADAPTOPT_ADAFACTOR_NSCAL };
#define ADAPTOPT_ADAFACTOR_MAXIMIZE 1
#define ADAPTOPT_ADAFACTOR_DECAY 2
#define ADAPTOPT_ADAFACTOR_ROW_BLOCK 64   /* rows per column-partial block */
#define ADAPTOPT_ADAFACTOR_CHUNK 4096     /* unfactored: elements per partial sum */
int adaptopt_adafactor_step(int dtype, size_t batch, size_t rows, size_t cols,
                            void *p, const void *g, void *row_var, void *col_var,
                            void *variance, const double *scal, size_t nscal, int flags,
                            int n_threads);

/* Row-wise steps of a 2-D table (csrc/rows.c): one step of an elementwise
 * algorithm (adam, adagrad, sgd, rmsprop: any adaptopt_step algorithm) on
 * the touched rows of a table of n_rows x cols elements, each row updated
 * by the algorithm's own segment function; untouched rows are not read.
 *
 * base[k], k < nbuf, in the algorithm's buffer order: the start of buffer
 * k's whole table (k = 0 the parameter), except base[1]: the row gradients,
 * n_grads x cols, C-contiguous, never written.  NULL for buffers unused
 * under flags.  The touched rows: n_groups distinct indices rows[i] <
 * n_rows; group i's gradient is the sum, in this order, of the gradient
 * rows order[starts[i]] .. order[starts[i+1] - 1] (starts has n_groups + 1
 * entries, starts[0] = 0, starts[n_groups] = n_grads, increasing; every
 * order[.] < n_grads).  order and starts NULL: group i is gradient row i.
 *
 * catchup NULL: lazy (only the touched rows change).  Otherwise, before a
 * touched row r is updated, with k = t - 1 - row_step[r] steps skipped
 * (row_step[r] <= t - 1 required, int64), in this order:
 *   drift >= 0:  p[r] = p[r] + c*buf[r],  buf = buffer drift,
 *                c = drift_lr * (drift_mu * (1 - drift_mu^k) / (1 - drift_mu))
 *   every k' with base[k'] != 1:  buffer k'[r] = buffer k'[r] * base[k']^k
 * (factors computed in double with pow(), then cast to the dtype); then
 * row_step[r] = t.  Rows with k = 0 are not caught up.
 *
 * The result is bitwise independent of n_threads (rows are independent;
 * each group's sum has a fixed order).  Returns ADAPTOPT_EINVAL for bad
 * arguments (nothing written), ADAPTOPT_ENOMEM if scratch (one row per
 * thread) cannot be allocated. */
typedef struct {
    double base[ADAPTOPT_MAX_NBUF];
    int drift;
    double drift_lr, drift_mu;
} adaptopt_rows_catchup;
int adaptopt_rows_step(int algo, int dtype, size_t n_rows, size_t cols, size_t nbuf,
                       void *const *base, size_t n_grads, const int64_t *rows,
                       const int64_t *order, const int64_t *starts, size_t n_groups,
                       int64_t *row_step, long long t, const adaptopt_rows_catchup *catchup,
                       const double *scal, size_t nscal, int flags, int n_threads);

/* 8-bit state (csrc/quant.c; the spec: adaptopt._quant).  x has n float32
 * values, codes n uint8, absmax one float32 per block of ADAPTOPT_Q8_BLOCK
 * (256) elements from x[0] (ceil(n/256)).  is_signed: the signed map (first
 * moments) or the unsigned one; stochastic: stochastic rounding with the
 * random bits of element i, fmix32((uint32)i*0x9E3779B9 ^ (uint32)(i>>32)*0x85EBCA77
 * ^ key), else nearest.  Bitwise the same on every ISA and thread count. */
int adaptopt_q8_quantize(const float *x, size_t n, uint8_t *codes, float *absmax,
                         int is_signed, int stochastic, uint32_t key, int n_threads);
int adaptopt_q8_dequantize(const uint8_t *codes, const float *absmax, size_t n, float *x,
                           int is_signed, int n_threads);

/* The global gradient norm's reduction (csrc/gradnorm.c): over every
 * gradient of a step, *sumsq = the sum of the squares of all elements, in
 * float64, and *nonfinite = 1 if any element is inf or NaN (else 0).  Array
 * i is stored as types[i] (ADAPTOPT_STORE_F32, F64, BF16 or F16), starts at
 * ptr[i] and has offsets[i+1] - offsets[i] elements (offsets[0] = 0).
 *
 * The order is fixed, so the bits do not depend on n_threads or the ISA:
 * each array is cut into blocks of ADAPTOPT_GRADNORM_BLOCK elements from its
 * start (the last one shorter); a block's sum is the 16-lane sum of
 * gradnorm.c.inc; *sumsq = ((0 + b_0) + b_1) + ... over every block of
 * array 0, then of array 1, ...  Threads share the blocks (from
 * ADAPTOPT_GRADNORM_THRESHOLD elements on, n_threads clamped to
 * adaptopt_thread_limit()).  Allocates one double per block: returns
 * ADAPTOPT_ENOMEM if that fails; never writes the arrays. */
#define ADAPTOPT_GRADNORM_BLOCK 4096
#define ADAPTOPT_GRADNORM_THRESHOLD 65536
int adaptopt_grad_sumsq(size_t n_arrays, const int *types, const void *const *ptr,
                        const size_t *offsets, int n_threads, double *sumsq, int *nonfinite);

/* Which kernels run: ADAPTOPT_ISA_*; set returns an error code.  The ISA,
 * the thresholds and the thread cap may be set while other threads step:
 * each step reads each of them once, atomically. */
int adaptopt_get_isa(void);
int adaptopt_set_isa(int isa);
int adaptopt_isa_compiled(int isa);   /* 1 if built into this library */
int adaptopt_isa_supported(int isa);  /* 1 if this CPU can run it     */
const char *adaptopt_isa_name(int isa);

/* Threads: OpenMP presence, default thread count, and the serial/parallel
 * threshold: a batch of algo on dtype runs in parallel from this many
 * elements on.  set: algo and/or dtype -1 set every algorithm and/or dtype;
 * get: 0 for an unknown algo or dtype. */
int adaptopt_openmp(void);
int adaptopt_max_threads(void);
/* n_threads above this are clamped to it (the CPUs OpenMP sees at the
 * first call, at most ADAPTOPT_THREAD_CAP); adaptopt_step rejects
 * n_threads < 1. */
#define ADAPTOPT_THREAD_CAP 1024
int adaptopt_thread_limit(void);
size_t adaptopt_get_threshold(int algo, int dtype);
void adaptopt_set_threshold(int algo, int dtype, size_t n_elements);
const char *adaptopt_compiler(void);
const char *adaptopt_build_flags(void);  /* the kernels' compiler flags */

#ifdef __cplusplus
}
#endif
#endif
