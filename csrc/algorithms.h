/* The one list of algorithms.  Everything C knows about an algorithm comes
 * from here: the enum, each ISA's kernel table, the buffer, scalar and flag
 * counts that adaptopt_step() checks, their names (Python reads them through
 * adaptopt_algo_info(), so the order is written only here), the exact flag
 * mask, and the serial/parallel thresholds.
 *
 * ADAPTOPT_ALGORITHMS(X): X(name, NAME, threshold_f32, threshold_f64) per
 * algorithm; name is the kernel body's file (csrc/<name>.c.inc) and the
 * prefix of its functions.  Thresholds: elements of a batch from which it
 * runs on several threads (measured: see dispatch.c).
 *
 * For each NAME, three lists, each entry E(NAME, item):
 *   ADAPTOPT_<NAME>_BUFFERS  the state buffers, in kernel order after the
 *                            parameter (buffer 0) and the gradient (buffer 1)
 *   ADAPTOPT_<NAME>_SCALARS  the per-step scalars, by name: the caller
 *                            computes them in double, the kernel reads
 *                            sc[ADAPTOPT_SC(NAME, item)] cast to its type
 *   ADAPTOPT_<NAME>_FLAGS    the public flags: item k is bit k
 *                            (ADAPTOPT_FL(NAME, item)); any other bit is
 *                            rejected.  A kernel's internal flags live above
 *                            these (ADAPTOPT_INTERNAL_FLAG(NAME, k)).
 *
 * Adding an algorithm: its body csrc/<name>.c.inc, one X row and its three
 * lists here, and its #include line in bodies.inc (the preprocessor cannot
 * generate #include lines). */
#ifndef ADAPTOPT_ALGORITHMS_H
#define ADAPTOPT_ALGORITHMS_H

#define ADAPTOPT_ALGORITHMS(X)             \
    X(adam,    ADAM,    16384, 4096)       \
    X(adagrad, ADAGRAD, 16384, 8192)       \
    X(rmsprop, RMSPROP, 16384, 8192)       \
    X(sgd,     SGD,     32768, 16384)      \
    X(adadelta, ADADELTA, 16384, 4096)     \
    X(rprop,   RPROP,   32768, 16384)      \
    X(asgd,    ASGD,    32768, 16384)      \
    X(nadam,   NADAM,   16384, 4096)       \
    X(radam,   RADAM,   16384, 4096)       \
    X(adamax,  ADAMAX,  16384, 8192)       \
    X(lion,    LION,    32768, 16384)

/* Adam, AdamW, AMSGrad (adam.c.inc) */
#define ADAPTOPT_ADAM_BUFFERS(E, A) E(A, exp_avg) E(A, exp_avg_sq) E(A, max_exp_avg_sq)
#define ADAPTOPT_ADAM_SCALARS(E, A) \
    E(A, one_minus_beta1) E(A, beta2) E(A, one_minus_beta2) E(A, decay) E(A, eps) \
    E(A, bias_correction2_sqrt) E(A, neg_step_size)
#define ADAPTOPT_ADAM_FLAGS(E, A) E(A, maximize) E(A, l2) E(A, decoupled) E(A, amsgrad)

/* Adagrad (adagrad.c.inc) */
#define ADAPTOPT_ADAGRAD_BUFFERS(E, A) E(A, sum)
#define ADAPTOPT_ADAGRAD_SCALARS(E, A) E(A, weight_decay) E(A, eps) E(A, neg_clr)
#define ADAPTOPT_ADAGRAD_FLAGS(E, A) E(A, maximize) E(A, l2)

/* RMSprop (rmsprop.c.inc) */
#define ADAPTOPT_RMSPROP_BUFFERS(E, A) E(A, square_avg) E(A, momentum_buffer) E(A, grad_avg)
#define ADAPTOPT_RMSPROP_SCALARS(E, A) \
    E(A, alpha) E(A, one_minus_alpha) E(A, eps) E(A, weight_decay) E(A, momentum) E(A, neg_lr)
#define ADAPTOPT_RMSPROP_FLAGS(E, A) E(A, maximize) E(A, l2) E(A, centered) E(A, momentum)

/* SGD with momentum (sgd.c.inc) */
#define ADAPTOPT_SGD_BUFFERS(E, A) E(A, momentum_buffer)
#define ADAPTOPT_SGD_SCALARS(E, A) E(A, weight_decay) E(A, momentum) E(A, one_minus_dampening) E(A, neg_lr)
#define ADAPTOPT_SGD_FLAGS(E, A) E(A, maximize) E(A, l2) E(A, momentum) E(A, nesterov) E(A, first)

/* Adadelta (adadelta.c.inc) */
#define ADAPTOPT_ADADELTA_BUFFERS(E, A) E(A, square_avg) E(A, acc_delta)
#define ADAPTOPT_ADADELTA_SCALARS(E, A) \
    E(A, rho) E(A, one_minus_rho) E(A, eps) E(A, weight_decay) E(A, neg_lr)
#define ADAPTOPT_ADADELTA_FLAGS(E, A) E(A, maximize) E(A, l2)

/* Rprop (rprop.c.inc) */
#define ADAPTOPT_RPROP_BUFFERS(E, A) E(A, prev) E(A, step_size)
#define ADAPTOPT_RPROP_SCALARS(E, A) \
    E(A, etaminus) E(A, etaplus) E(A, step_size_min) E(A, step_size_max)
#define ADAPTOPT_RPROP_FLAGS(E, A) E(A, maximize)

/* ASGD (asgd.c.inc); flag average: mu != 1 this step (chosen per step) */
#define ADAPTOPT_ASGD_BUFFERS(E, A) E(A, ax)
#define ADAPTOPT_ASGD_SCALARS(E, A) E(A, weight_decay) E(A, decay) E(A, neg_eta) E(A, mu)
#define ADAPTOPT_ASGD_FLAGS(E, A) E(A, maximize) E(A, l2) E(A, average)

/* NAdam (nadam.c.inc) */
#define ADAPTOPT_NADAM_BUFFERS(E, A) E(A, exp_avg) E(A, exp_avg_sq)
#define ADAPTOPT_NADAM_SCALARS(E, A) \
    E(A, one_minus_beta1) E(A, beta2) E(A, one_minus_beta2) E(A, decay) E(A, eps) \
    E(A, bias_correction2) E(A, grad_coef) E(A, exp_avg_coef)
#define ADAPTOPT_NADAM_FLAGS(E, A) E(A, maximize) E(A, l2) E(A, decoupled)

/* RAdam (radam.c.inc); flag rectified: this step's rho_t > 5.  bias_correction1
 * is scalar 5, where the emulated AVX-512 check feeds a 1 (its BC1_ONE variant) */
#define ADAPTOPT_RADAM_BUFFERS(E, A) E(A, exp_avg) E(A, exp_avg_sq)
#define ADAPTOPT_RADAM_SCALARS(E, A) \
    E(A, one_minus_beta1) E(A, beta2) E(A, one_minus_beta2) E(A, decay) E(A, eps) \
    E(A, bias_correction1) E(A, lr) E(A, bias_correction2_sqrt) E(A, rect)
#define ADAPTOPT_RADAM_FLAGS(E, A) E(A, maximize) E(A, l2) E(A, decoupled) E(A, rectified)

/* Adamax (adamax.c.inc) */
#define ADAPTOPT_ADAMAX_BUFFERS(E, A) E(A, exp_avg) E(A, exp_inf)
#define ADAPTOPT_ADAMAX_SCALARS(E, A) \
    E(A, one_minus_beta1) E(A, beta2) E(A, eps) E(A, weight_decay) E(A, neg_clr)
#define ADAPTOPT_ADAMAX_FLAGS(E, A) E(A, maximize) E(A, l2)

/* Lion (lion.c.inc) */
#define ADAPTOPT_LION_BUFFERS(E, A) E(A, exp_avg)
#define ADAPTOPT_LION_SCALARS(E, A) \
    E(A, beta1) E(A, one_minus_beta1) E(A, beta2) E(A, one_minus_beta2) E(A, decay) E(A, neg_lr)
#define ADAPTOPT_LION_FLAGS(E, A) E(A, maximize) E(A, decay)

/* ---- derived from the lists above; nothing to edit below ---------------- */
#define ADAPTOPT_ENUM_ALGO_(name, NAME, t32, t64) ADAPTOPT_##NAME,
enum adaptopt_algo { ADAPTOPT_ALGORITHMS(ADAPTOPT_ENUM_ALGO_) ADAPTOPT_N_ALGOS };

#define ADAPTOPT_SC(NAME, item) ADAPTOPT_##NAME##_SC_##item
#define ADAPTOPT_FB_(NAME, item) ADAPTOPT_##NAME##_FB_##item
#define ADAPTOPT_FL(NAME, item) (1 << ADAPTOPT_FB_(NAME, item))
#define ADAPTOPT_BI(NAME, item) ADAPTOPT_##NAME##_BI_##item

#define ADAPTOPT_ENUM_SC_(A, item) ADAPTOPT_SC(A, item),
#define ADAPTOPT_ENUM_FB_(A, item) ADAPTOPT_FB_(A, item),
#define ADAPTOPT_ENUM_BI_(A, item) ADAPTOPT_BI(A, item),
#define ADAPTOPT_ENUMS_(name, NAME, t32, t64)                                                 \
    enum { ADAPTOPT_##NAME##_SCALARS(ADAPTOPT_ENUM_SC_, NAME) ADAPTOPT_##NAME##_NSCAL };       \
    enum { ADAPTOPT_##NAME##_FLAGS(ADAPTOPT_ENUM_FB_, NAME) ADAPTOPT_##NAME##_NFLAGS };        \
    enum { ADAPTOPT_##NAME##_BI_p_, ADAPTOPT_##NAME##_BI_g_,                                \
           ADAPTOPT_##NAME##_BUFFERS(ADAPTOPT_ENUM_BI_, NAME) ADAPTOPT_##NAME##_NBUF };
ADAPTOPT_ALGORITHMS(ADAPTOPT_ENUMS_)

/* Internal flag k of an algorithm: above its public ones. */
#define ADAPTOPT_INTERNAL_FLAG(NAME, k) (1 << (ADAPTOPT_##NAME##_NFLAGS + (k)))

#define ADAPTOPT_MAX_NSCAL 16
#define ADAPTOPT_MAX_NBUF 8
#define ADAPTOPT_CHECK_SIZES_(name, NAME, t32, t64)                                         \
    typedef char adaptopt_##name##_fits_[(ADAPTOPT_##NAME##_NSCAL <= ADAPTOPT_MAX_NSCAL       \
                                          && ADAPTOPT_##NAME##_NBUF <= ADAPTOPT_MAX_NBUF      \
                                          && ADAPTOPT_##NAME##_NFLAGS <= 8) ? 1 : -1];
ADAPTOPT_ALGORITHMS(ADAPTOPT_CHECK_SIZES_)

#endif
