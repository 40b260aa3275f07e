/* adaptopt: the C API of the fused optimizer kernels.
 *
 * One entry point, adaptopt_step(), updates a batch of arrays in a single
 * pass over memory: for each element it reads the parameter, the gradient
 * and the state once and writes the parameter and the state once.  No
 * allocation, no temporaries, never writes the gradient.
 *
 * A batch is n_arrays arrays that share the algorithm, dtype, flags and
 * scalars.  ptr[i*nbuf + k] is buffer k of array i, in the algorithm's
 * order (ADAPTOPT_*_BUFFERS below); array i has offsets[i+1] - offsets[i]
 * elements (offsets[0] = 0).  Buffers an algorithm does not use under the
 * given flags may be NULL.
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

enum adaptopt_algo {
    ADAPTOPT_ADAM,     /* buffers p, g, exp_avg, exp_avg_sq, max_exp_avg_sq */
    ADAPTOPT_ADAGRAD,  /* buffers p, g, sum */
    ADAPTOPT_RMSPROP,  /* buffers p, g, square_avg, momentum_buffer, grad_avg */
    ADAPTOPT_SGD,      /* buffers p, g, momentum_buffer */
    ADAPTOPT_ROOFLINE, /* benchmark only: buffers r0..r3 read, w0..w2 written */
    ADAPTOPT_N_ALGOS
};

enum adaptopt_dtype { ADAPTOPT_FLOAT32, ADAPTOPT_FLOAT64, ADAPTOPT_N_DTYPES };

enum adaptopt_isa { ADAPTOPT_ISA_SCALAR, ADAPTOPT_ISA_AVX2, ADAPTOPT_ISA_AVX512, ADAPTOPT_N_ISAS };

/* Flags (per algorithm; unused bits must be 0). */
#define ADAPTOPT_MAXIMIZE     1  /* all: g = -g                                   */
#define ADAPTOPT_L2           2  /* all: g = g + wd*p                             */
#define ADAPTOPT_DECOUPLED    4  /* Adam: p = p*(1 - lr*wd) first (AdamW)         */
#define ADAPTOPT_AMSGRAD      8  /* Adam: vmax = max(vmax, v), used instead of v  */
#define ADAPTOPT_CENTERED     4  /* RMSprop: subtract the squared mean gradient   */
#define ADAPTOPT_MOMENTUM     8  /* RMSprop, SGD: momentum buffer                 */
#define ADAPTOPT_NESTEROV     4  /* SGD: d = g + momentum*buf                     */
#define ADAPTOPT_FIRST       16  /* SGD: buf = g (the buffer's first step)        */
#define ADAPTOPT_N_FLAGS     32  /* flags < ADAPTOPT_N_FLAGS                      */

/* Number of per-step scalars each algorithm takes (see the kernel files). */
#define ADAPTOPT_ADAM_NSCAL     7  /* 1-b1, b2, 1-b2, wd|1-lr*wd, eps, sqrt(1-b2^t), -lr/(1-b1^t) */
#define ADAPTOPT_ADAGRAD_NSCAL  3  /* wd, eps, -lr/(1+(t-1)*lr_decay) */
#define ADAPTOPT_RMSPROP_NSCAL  6  /* alpha, 1-alpha, eps, wd, momentum, -lr */
#define ADAPTOPT_SGD_NSCAL      4  /* wd, momentum, 1-dampening, -lr */
#define ADAPTOPT_MAX_NSCAL      8

/* Error codes. */
#define ADAPTOPT_OK           0
#define ADAPTOPT_EINVAL      -1  /* bad algo, dtype, flags, nbuf or nscal */
#define ADAPTOPT_ENOISA      -2  /* the ISA was not compiled in            */
#define ADAPTOPT_ECPU        -3  /* the ISA was compiled in, the CPU lacks it */

int adaptopt_step(int algo, int dtype, size_t n_arrays, size_t nbuf,
                  void *const *ptr, const size_t *offsets,
                  const double *scal, size_t nscal, int flags, int n_threads);

/* Which kernels run: ADAPTOPT_ISA_*; set returns an error code. */
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
size_t adaptopt_get_threshold(int algo, int dtype);
void adaptopt_set_threshold(int algo, int dtype, size_t n_elements);
const char *adaptopt_compiler(void);
const char *adaptopt_build_flags(void);  /* the kernels' compiler flags */

#ifdef __cplusplus
}
#endif
#endif
