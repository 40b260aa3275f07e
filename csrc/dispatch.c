/* adaptopt_step(): checks its arguments, picks the kernel for the current
 * ISA, casts the scalars, and splits the batch between OpenMP threads.
 *
 * ISA: the best the CPU runs is chosen on first use (CPUID, through the
 * compiler's __builtin_cpu_supports, which also checks that the OS saves
 * the wide registers; MSVC has no such builtin: __cpuid and _xgetbv make
 * the same checks); adaptopt_set_isa() forces another.
 *
 * Threads: below the threshold (total elements of the batch, per algorithm
 * and dtype) the update runs serially, with no OpenMP region at all.  From
 * the threshold on, one parallel
 * region covers every array of the batch: the concatenated element range
 * is cut into n_threads equal parts, each cut moved forward to the next
 * 64-byte boundary of the parameter array it falls in, so no two threads
 * write the same cache line of a parameter.  The update is elementwise,
 * so the result does not depend on the number of threads. */
#include "internal.h"
#include "gather.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define ADAPTOPT_X86 1
#endif
#if defined(ADAPTOPT_X86) && defined(_MSC_VER)
#include <intrin.h>  /* __cpuid, __cpuidex, _xgetbv (MSVC and clang-cl) */
#endif

static const adaptopt_table *const tables[ADAPTOPT_N_ISAS] = {
    &adaptopt_table_scalar,
#ifdef ADAPTOPT_HAVE_AVX2
    &adaptopt_table_avx2,
#else
    NULL,
#endif
#ifdef ADAPTOPT_HAVE_AVX512
    &adaptopt_table_avx512,
#else
    NULL,
#endif
};

static const char *const isa_names[ADAPTOPT_N_ISAS] = {"scalar", "avx2", "avx512"};

/* adaptopt_algo_info rows, from algorithms.h */
#define NAME_(A, item) #item ","
#define COUNT_(A, item) +1
#define INFO_(name, NAME, t32, t64)                                                        \
    {#name, "p,g," ADAPTOPT_##NAME##_BUFFERS(NAME_, NAME), ADAPTOPT_##NAME##_SCALARS(NAME_, NAME), \
     ADAPTOPT_##NAME##_FLAGS(NAME_, NAME), ADAPTOPT_##NAME##_NBUF, ADAPTOPT_##NAME##_NSCAL,  \
     ADAPTOPT_##NAME##_NFLAGS},
static const adaptopt_algo_info algo_info[ADAPTOPT_N_ALGOS] = {ADAPTOPT_ALGORITHMS(INFO_)};
#undef INFO_
#undef COUNT_
#undef NAME_

const adaptopt_algo_info *adaptopt_get_algo_info(int algo)
{
    return (algo >= 0 && algo < ADAPTOPT_N_ALGOS) ? &algo_info[algo] : NULL;
}

/* The serial/parallel threshold, in elements of a batch, per algorithm and
 * dtype.  A parallel region costs a few microseconds of fork/join here, so
 * a second thread pays only once the serial step is several times longer,
 * and that depends on the work per element (Adam's two divisions and a
 * square root against SGD's multiply-adds; a float64 vector holds half as
 * many elements).  Measured on the 2-core AVX2 test machine with
 * bench/bench_threshold.py: a whole opt.step(), median of interleaved
 * rounds, us with 1 thread / 2 threads:
 *                    4096        8192       16384       32768       65536
 *   adam f32    11.9/12.7   14.3/13.9   17.2/13.4   26.7/19.1   45.2/29.0
 *   adam f64    15.3/13.8   22.9/18.6   31.0/20.0   56.6/34.6  126.6/75.4
 *   adagrad f32  9.5/10.3   11.8/12.2   15.8/14.2   22.7/17.7   38.6/26.3
 *   adagrad f64 14.5/13.3   19.8/16.1   30.9/23.5   51.7/33.5   93.0/56.5
 *   rmsprop f32 10.9/11.7   13.0/12.7   16.9/15.3   24.6/19.0   39.2/27.4
 *   rmsprop f64 14.5/13.6   20.5/16.6   31.8/22.9   53.2/34.5   93.9/57.0
 *   sgd f32     10.2/11.4   11.5/12.0   13.4/14.0   19.1/15.9   30.9/21.6
 *   sgd f64     11.0/11.7   13.9/13.1   19.2/16.4   28.1/21.1   48.1/31.0
 * (the machine was slow that day: the same 4096-element Adam step takes
 * ~5 us when it is quiet; the ratios held across runs).  Each default is
 * the smallest power of two from which 2 threads were >= 1.1x faster at
 * every larger size in every run; they are the last two columns of
 * ADAPTOPT_ALGORITHMS (algorithms.h).  With the other core busy a second
 * thread costs more than it saves at any size (README: OMP_WAIT_POLICY). */
#define THRESHOLDS_(name, NAME, t32, t64) {t32, t64},
static size_t thresholds[ADAPTOPT_N_ALGOS][ADAPTOPT_N_DTYPES] = {ADAPTOPT_ALGORITHMS(THRESHOLDS_)};
#undef THRESHOLDS_
static const size_t roofline_threshold[ADAPTOPT_N_DTYPES] = {32768, 16384};

/* Settable while other threads step: relaxed atomic loads and stores (an
 * aligned word is read whole; each step reads each setting once). */
#if defined(__GNUC__) || defined(__clang__)
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#else  /* MSVC: aligned word accesses are atomic on x86-64 and ARM64 */
#define LOAD(x) (x)
#define STORE(x, v) ((x) = (v))
#endif
static int current_isa = -1;

const char *adaptopt_isa_name(int isa)
{
    return (isa >= 0 && isa < ADAPTOPT_N_ISAS) ? isa_names[isa] : "unknown";
}

int adaptopt_isa_compiled(int isa)
{
    return isa >= 0 && isa < ADAPTOPT_N_ISAS && tables[isa] != NULL;
}

#if defined(ADAPTOPT_X86) && defined(_MSC_VER)
/* What __builtin_cpu_supports checks, by hand: the CPUID feature bits, and
 * (OSXSAVE, then XCR0 through XGETBV) that the OS saves the registers:
 * XMM|YMM state (bits 1, 2) for AVX2, plus opmask|ZMM_Hi256|Hi16_ZMM
 * (bits 5-7) for AVX-512.  clang-cl defines _MSC_VER too and takes this
 * path (its __builtin_cpu_supports needs compiler-rt, absent with MSVC's
 * linker). */
static int msvc_cpu_supports(int isa)
{
    int r[4];
    __cpuid(r, 0);
    if (r[0] < 7)
        return 0;
    __cpuid(r, 1);
    if (!(r[2] & (1 << 27)) || !(r[2] & (1 << 28)))  /* OSXSAVE, AVX */
        return 0;
    unsigned long long xcr0 = _xgetbv(0);
    if ((xcr0 & 0x6) != 0x6)
        return 0;
    __cpuidex(r, 7, 0);
    const unsigned ebx = (unsigned)r[1];
    if (isa == ADAPTOPT_ISA_AVX2)
        return (ebx >> 5) & 1;
    if (isa == ADAPTOPT_ISA_AVX512)
        return (xcr0 & 0xE6) == 0xE6 && ((ebx >> 16) & 1) /* F */ && ((ebx >> 17) & 1) /* DQ */
            && ((ebx >> 30) & 1) /* BW */ && ((ebx >> 31) & 1) /* VL */;
    return 0;
}
#endif

int adaptopt_isa_supported(int isa)
{
    if (!adaptopt_isa_compiled(isa))
        return 0;
    if (isa == ADAPTOPT_ISA_SCALAR)
        return 1;
#if defined(ADAPTOPT_X86) && defined(_MSC_VER)
    return msvc_cpu_supports(isa);
#elif defined(ADAPTOPT_X86) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (isa == ADAPTOPT_ISA_AVX2)
        return !!__builtin_cpu_supports("avx2");  /* a nonzero int: 1 */
    if (isa == ADAPTOPT_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#endif
    return 0;
}

int adaptopt_get_isa(void)
{
    int isa = LOAD(current_isa);
    if (isa < 0) {  /* first use: the best this CPU runs (racing threads agree) */
        isa = ADAPTOPT_N_ISAS - 1;
        while (!adaptopt_isa_supported(isa))
            isa--;
        STORE(current_isa, isa);
    }
    return isa;
}

int adaptopt_set_isa(int isa)
{
    if (!adaptopt_isa_compiled(isa))
        return ADAPTOPT_ENOISA;
    if (!adaptopt_isa_supported(isa))
        return ADAPTOPT_ECPU;
    STORE(current_isa, isa);
    return ADAPTOPT_OK;
}

int adaptopt_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static int thread_limit = 0;

int adaptopt_thread_limit(void)
{
#ifdef _OPENMP
    int n = LOAD(thread_limit);
    if (n == 0) {  /* first use: omp_get_num_procs() asks the OS, so it is asked once */
        n = omp_get_num_procs();
        n = n < 1 ? 1 : n > ADAPTOPT_THREAD_CAP ? ADAPTOPT_THREAD_CAP : n;
        STORE(thread_limit, n);
    }
    return n;
#else
    return 1;
#endif
}

int adaptopt_max_threads(void)
{
#ifdef _OPENMP
    int n = omp_get_max_threads(), cap = adaptopt_thread_limit();
    return n < 1 ? 1 : n > cap ? cap : n;
#else
    return 1;
#endif
}

size_t adaptopt_get_threshold(int algo, int dtype)
{
    if (algo < 0 || algo >= ADAPTOPT_N_ALGOS || dtype < 0 || dtype >= ADAPTOPT_N_DTYPES)
        return 0;
    return LOAD(thresholds[algo][dtype]);
}

void adaptopt_set_threshold(int algo, int dtype, size_t n_elements)
{
    for (int a = 0; a < ADAPTOPT_N_ALGOS; a++)
        for (int d = 0; d < ADAPTOPT_N_DTYPES; d++)
            if ((algo < 0 || algo == a) && (dtype < 0 || dtype == d))
                STORE(thresholds[a][d], n_elements);
}

#ifndef ADAPTOPT_BUILD_FLAGS
#define ADAPTOPT_BUILD_FLAGS "unknown"
#endif
const char *adaptopt_build_flags(void) { return ADAPTOPT_BUILD_FLAGS; }

const char *adaptopt_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc";
#else
    return "unknown";
#endif
}

/* A staged or strided call's extras (adaptopt_step_staged, adaptopt_step_strided);
 * NULL for a plain one.  fn NULL: not staged; gdesc NULL: no strided gradient. */
typedef struct {
    adaptopt_staged_fn fn;
    const adaptopt_staging *st;
    void *const *aux;
    size_t block;  /* cut threads at multiples of this many elements of an array (1: any) */
    const int64_t *const *gdesc;
    size_t esize;
} stage_call;

/* Gradient elements per gather block: 4 or 8 KiB, L1-resident beside the
 * block's parameter and state lines. */
#define GATHER_BLOCK 1024

/* f over elements [off, off+n) of one array whose gradient is strided
 * (adaptopt_step_strided): per block, the gradient's elements, in the
 * parameter's element order, are gathered into a local array and f runs on
 * it as on memory. */
static void strided_range(adaptopt_seg_fn f, size_t nbuf, void *const *b, const int64_t *d,
                          size_t esize, size_t off, size_t n, const void *sc, int flags)
{
    union { float f[GATHER_BLOCK]; double d[GATHER_BLOCK]; } loc;
    void *bb[ADAPTOPT_MAX_NBUF];
    for (size_t s = off, end = off + n; s < end;) {
        size_t m = end - s < GATHER_BLOCK ? end - s : GATHER_BLOCK;
        adaptopt_gather(&loc, b[1], d, esize, s, m, 0);
        for (size_t k = 0; k < nbuf; k++)
            bb[k] = b[k] ? (char *)b[k] + s * esize : NULL;
        bb[1] = &loc;
        f(bb, 0, m, sc, flags);
        s += m;
    }
}

static void run_range(adaptopt_seg_fn f, size_t nbuf, void *const *ptr, const size_t *offsets,
                      size_t first, size_t lo, size_t hi, const void *sc, int flags,
                      const stage_call *sg)
{
    for (size_t i = first; lo < hi; i++) {
        size_t end = offsets[i + 1] < hi ? offsets[i + 1] : hi;
        if (end > lo) {
            if (sg && sg->gdesc && sg->gdesc[i])
                strided_range(f, nbuf, ptr + i * nbuf, sg->gdesc[i], sg->esize,
                              lo - offsets[i], end - lo, sc, flags);
            else if (sg && sg->fn)
                sg->fn(f, ptr + i * nbuf, sg->aux ? sg->aux + i * nbuf : NULL, nbuf,
                       lo - offsets[i], end - lo, sc, flags, sg->st,
                       sg->st->array_ids ? sg->st->array_ids[i] : (uint64_t)i,
                       sg->st->gdesc ? sg->st->gdesc[i] : NULL);
            else
                f(ptr + i * nbuf, lo - offsets[i], end - lo, sc, flags);
        }
        lo = end;
    }
}

#ifdef _OPENMP
/* The array holding global element x: the last i with offsets[i] <= x. */
static size_t find_array(const size_t *offsets, size_t n_arrays, size_t x)
{
    size_t lo = 0, hi = n_arrays;  /* offsets[lo] <= x < offsets[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (offsets[mid] <= x) lo = mid; else hi = mid;
    }
    return lo;
}

/* Thread t's first element, cut at a cache line of the parameter array. */
static size_t cut(void *const *ptr, size_t nbuf, const size_t *offsets, size_t n_arrays,
                  size_t esize, size_t block, int t, int nt, size_t *array)
{
    size_t total = offsets[n_arrays];
    size_t x = total / nt * t + (total % nt) * t / nt;
    size_t i = find_array(offsets, n_arrays, x);
    if (t > 0 && block > 1) {
        size_t r = (x - offsets[i]) % block;
        if (r)
            x += block - r;
        if (x > offsets[i + 1])
            x = offsets[i + 1];
    } else if (t > 0) {
        size_t misalign = ((uintptr_t)ptr[i * nbuf] + (x - offsets[i]) * esize) % 64;
        if (misalign && misalign % esize == 0)
            x += (64 - misalign) / esize;
        if (x > offsets[i + 1])
            x = offsets[i + 1];
    }
    *array = i;
    return x;
}
#endif

#ifdef _OPENMP
/* The contention guard.  A parallel region is worth its fork and join only
 * while every thread gets a core: with another process busy on one of them,
 * libgomp's threads wait (spinning) for the one that is descheduled, and a
 * step took 6x longer on 2 threads than on 1 (issue 12).  So each parallel
 * region is timed: its wall time against its serial estimate (the fastest
 * thread's busy time times the thread count: what one thread would have
 * taken for all of it).  A region slower than its serial estimate (plus
 * GUARD_SLACK for the fork and join) sends every batch to one thread for
 * a while; then one region probes again.  The while starts at GUARD_MIN
 * and doubles with each slow probe up to GUARD_MAX (a slow probe costs
 * about a scheduler time slice, so at most a few ms per GUARD_MAX); a
 * probe that is not slow ends it.  An idle machine never trips it.  Times
 * in ns of omp_get_wtime(); settings shared by all callers (relaxed atomics). */
#define GUARD_SLACK 20000          /* ns */
#define GUARD_MIN 50000000         /* ns: 50 ms */
#define GUARD_MAX 1600000000       /* ns: 1.6 s */
static int guard_on = 1;
static int64_t guard_until = 0;    /* serial until this time */
static int64_t guard_len = 0;      /* the current while (0: the last probe was fine) */
static int64_t guard_trips = 0;    /* slow regions seen */

static int64_t now_ns(void) { return (int64_t)(omp_get_wtime() * 1e9); }
#endif

int adaptopt_set_thread_guard(int on)
{
#ifdef _OPENMP
    int old = LOAD(guard_on);
    STORE(guard_on, on ? 1 : 0);
    return old;
#else
    (void)on;
    return 0;
#endif
}

long long adaptopt_thread_guard_trips(void)
{
#ifdef _OPENMP
    return (long long)LOAD(guard_trips);
#else
    return 0;
#endif
}

/* Run f over a batch: serially below threshold (or while the contention
 * guard says so), else one parallel region (n_threads already clamped to
 * >= 1).  guard: time the region (adaptopt_step; the roofline benchmark
 * does not). */
static void run_batch(adaptopt_seg_fn f, size_t esize, size_t n_arrays, size_t nbuf,
                      void *const *ptr, const size_t *offsets, const void *sc, int flags,
                      int n_threads, size_t threshold, const stage_call *sg, int guard)
{
    size_t total = offsets[n_arrays];
#ifdef _OPENMP
    guard = guard && LOAD(guard_on);
    int64_t t0 = guard ? now_ns() : 0;
    if (n_threads > 1 && total >= threshold && total > 1 && !(guard && t0 < LOAD(guard_until))) {
        size_t block = sg ? sg->block : 1;
        double busy = 1e300;
        int used = 1;
#pragma omp parallel num_threads(n_threads) reduction(min:busy)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            double start = guard ? omp_get_wtime() : 0;
            size_t first, last;
            size_t lo = cut(ptr, nbuf, offsets, n_arrays, esize, block, t, nt, &first);
            size_t hi = t + 1 < nt
                ? cut(ptr, nbuf, offsets, n_arrays, esize, block, t + 1, nt, &last) : total;
            run_range(f, nbuf, ptr, offsets, first, lo, hi, sc, flags, sg);
            if (guard)
                busy = omp_get_wtime() - start;
            if (t == 0)
                used = nt;
        }
        if (guard && used > 1) {
            int64_t t1 = now_ns(), len = LOAD(guard_len);
            if (t1 - t0 > (int64_t)(busy * 1e9 * used) + GUARD_SLACK) {
                len = len ? (len * 2 > GUARD_MAX ? GUARD_MAX : len * 2) : GUARD_MIN;
                STORE(guard_len, len);
                STORE(guard_until, t1 + len);
                STORE(guard_trips, LOAD(guard_trips) + 1);
            } else if (len) {
                STORE(guard_len, (int64_t)0);
            }
        }
        return;
    }
#else
    (void)n_threads; (void)threshold; (void)esize; (void)guard;
#endif
    run_range(f, nbuf, ptr, offsets, 0, 0, total, sc, flags, sg);
}

/* Never more threads than CPUs: an unbounded count crashes libgomp
 * (segfault at 100,000, "Out of memory" abort at 10**9).  Python clamps
 * first (_config.MAX_THREADS); this is defence in depth. */
static int clamp_threads(int n_threads)
{
    int cap = adaptopt_thread_limit();
    return n_threads > cap ? cap : n_threads;
}

/* The per-step scalars in the kernel's type, cast as NumPy casts a Python float. */
typedef union { float f[ADAPTOPT_MAX_NSCAL]; double d[ADAPTOPT_MAX_NSCAL]; } scalars;

static void cast_scalars(scalars *sc, int dtype, const double *scal, size_t nscal)
{
    for (size_t k = 0; k < nscal; k++) {
        if (dtype == ADAPTOPT_FLOAT32)
            sc->f[k] = (float)scal[k];
        else
            sc->d[k] = scal[k];
    }
}

/* Each strided gradient's descriptor covers its array (adaptopt_step_strided);
 * written: none has a stride 0 (elements sharing memory), as a gradient
 * written back must not. */
static int gdesc_ok(const int64_t *const *gdesc, size_t n_arrays, const size_t *offsets,
                    int written)
{
    for (size_t i = 0; i < n_arrays; i++) {
        const int64_t *d = gdesc[i];
        if (!d)
            continue;
        if (d[0] < 1 || d[0] > ADAPTOPT_MAX_NDIM)
            return 0;
        uint64_t count = 1;
        for (int64_t k = 0; k < d[0]; k++) {
            if (d[1 + k] < 1 || (written && d[1 + k] > 1 && d[1 + d[0] + k] == 0))
                return 0;
            count *= (uint64_t)d[1 + k];
        }
        if (count != offsets[i + 1] - offsets[i])
            return 0;
    }
    return 1;
}

/* adaptopt_step and adaptopt_step_strided: the arguments checked, the
 * kernel looked up and its scalars cast, then the batch run (gdesc NULL:
 * every gradient contiguous). */
static int step_plain(int algo, int dtype, size_t n_arrays, size_t nbuf, void *const *ptr,
                      const int64_t *const *gdesc, const size_t *offsets, const double *scal,
                      size_t nscal, int flags, int n_threads)
{
    if (algo < 0 || algo >= ADAPTOPT_N_ALGOS || dtype < 0 || dtype >= ADAPTOPT_N_DTYPES
        || nbuf != (size_t)algo_info[algo].nbuf || nscal != (size_t)algo_info[algo].nscal
        || flags < 0 || flags >= (1 << algo_info[algo].nflags) || n_threads < 1
        || (gdesc && !gdesc_ok(gdesc, n_arrays, offsets, 0)))
        return ADAPTOPT_EINVAL;
    adaptopt_seg_fn f = tables[adaptopt_get_isa()]->step[algo][dtype];
    scalars sc;
    cast_scalars(&sc, dtype, scal, nscal);
    size_t esize = dtype == ADAPTOPT_FLOAT32 ? sizeof(float) : sizeof(double);
    stage_call sg = {NULL, NULL, NULL, 1, gdesc, esize};
    run_batch(f, esize, n_arrays, nbuf, ptr, offsets, &sc, flags, clamp_threads(n_threads),
              adaptopt_get_threshold(algo, dtype), gdesc ? &sg : NULL, 1);
    return ADAPTOPT_OK;
}

int adaptopt_step(int algo, int dtype, size_t n_arrays, size_t nbuf,
                  void *const *ptr, const size_t *offsets,
                  const double *scal, size_t nscal, int flags, int n_threads)
{
    return step_plain(algo, dtype, n_arrays, nbuf, ptr, NULL, offsets, scal, nscal, flags,
                      n_threads);
}

int adaptopt_step_strided(int algo, int dtype, size_t n_arrays, size_t nbuf,
                          void *const *ptr, const int64_t *const *gdesc, const size_t *offsets,
                          const double *scal, size_t nscal, int flags, int n_threads)
{
    if (!gdesc)
        return ADAPTOPT_EINVAL;
    return step_plain(algo, dtype, n_arrays, nbuf, ptr, gdesc, offsets, scal, nscal, flags,
                      n_threads);
}

static size_t storage_size(int storage, int compute)
{
    switch (storage) {
    case ADAPTOPT_STORE_F32: return 4;
    case ADAPTOPT_STORE_F64: return 8;
    case ADAPTOPT_STORE_BF16: case ADAPTOPT_STORE_F16: return 2;
    case ADAPTOPT_STORE_COMPUTE: return compute == ADAPTOPT_FLOAT32 ? 4 : 8;
    default: return 1;
    }
}

static int is_16bit(int storage)
{
    return storage == ADAPTOPT_STORE_BF16 || storage == ADAPTOPT_STORE_F16;
}

static int is_q8(int storage)
{
    return storage == ADAPTOPT_STORE_Q8_SIGNED || storage == ADAPTOPT_STORE_Q8_UNSIGNED;
}

/* Some buffer is 8-bit (its absmax is aux[k]; threads cut at 256-blocks). */
static int any_q8(const adaptopt_staging *st, size_t nbuf)
{
    for (size_t k = 0; k < nbuf; k++)
        if (is_q8(st->storage[k]))
            return 1;
    return 0;
}

/* The staging description is one adaptopt_step_staged can run. */
static int staging_ok(const adaptopt_staging *st, size_t nbuf)
{
    if (!st || (st->compute != ADAPTOPT_FLOAT32 && st->compute != ADAPTOPT_FLOAT64)
        || st->grad_div != st->grad_div || st->grad_mul != st->grad_mul
        || (st->mirror && (!is_16bit(st->mirror) || st->storage[0] != ADAPTOPT_STORE_COMPUTE))
        || (st->mirror_stochastic && !st->mirror))
        return 0;
    for (size_t k = 0; k < nbuf; k++) {
        int s = st->storage[k];
        if (s >= ADAPTOPT_N_STORAGES || (is_q8(s) && k < 2))  /* 8-bit: state buffers only */
            return 0;
        if ((is_16bit(s) || is_q8(s)) && st->compute != ADAPTOPT_FLOAT32)
            return 0;
        if (st->stochastic[k] && (k == 1 || !(is_16bit(s) || is_q8(s))))
            return 0;
    }
    if (st->mirror && st->compute != ADAPTOPT_FLOAT32)
        return 0;
    return 1;
}

/* Every buffer stored as bfloat16, rounded to nearest, and nothing else to
 * stage: the table's bfloat16 body runs on memory, with the same bits as
 * the staging blocks (kernels.c.inc). */
static int all_bf16(const adaptopt_staging *st, size_t nbuf)
{
    if (st->mirror || st->grad_div != 0 || st->grad_mul != 1 || st->grad_writeback || st->gdesc)
        return 0;
    for (size_t k = 0; k < nbuf; k++)
        if (st->storage[k] != ADAPTOPT_STORE_BF16 || st->stochastic[k])
            return 0;
    return 1;
}

int adaptopt_step_staged(int algo, const adaptopt_staging *st, size_t n_arrays, size_t nbuf,
                         void *const *ptr, void *const *aux, const size_t *offsets,
                         const double *scal, size_t nscal, int flags, int n_threads)
{
    if (algo < 0 || algo >= ADAPTOPT_N_ALGOS
        || nbuf != (size_t)algo_info[algo].nbuf || nscal != (size_t)algo_info[algo].nscal
        || flags < 0 || flags >= (1 << algo_info[algo].nflags) || n_threads < 1
        || !staging_ok(st, nbuf) || ((st->mirror || any_q8(st, nbuf)) && !aux)
        || (st->gdesc && !gdesc_ok(st->gdesc, n_arrays, offsets, st->grad_writeback)))
        return ADAPTOPT_EINVAL;
    const adaptopt_table *tab = tables[adaptopt_get_isa()];
    int dtype = st->compute;
    scalars sc;
    cast_scalars(&sc, dtype, scal, nscal);
    if (all_bf16(st, nbuf)) {
        run_batch(tab->step_bf16[algo], 2, n_arrays, nbuf, ptr, offsets, &sc, flags,
                  clamp_threads(n_threads), adaptopt_get_threshold(algo, dtype), NULL, 1);
        return ADAPTOPT_OK;
    }
    stage_call sg = {tab->staged[dtype], st, aux, any_q8(st, nbuf) ? ADAPTOPT_BLOCK : 1, NULL, 0};
    run_batch(tab->step[algo][dtype], storage_size(st->storage[0], dtype), n_arrays, nbuf, ptr,
              offsets, &sc, flags, clamp_threads(n_threads), adaptopt_get_threshold(algo, dtype),
              &sg, 1);
    return ADAPTOPT_OK;
}

int adaptopt_roofline(int dtype, size_t n_arrays, void *const *ptr, const size_t *offsets,
                      int n_rw, int n_threads)
{
    if (dtype < 0 || dtype >= ADAPTOPT_N_DTYPES || n_rw < 1 || n_rw > 4 || n_threads < 1)
        return ADAPTOPT_EINVAL;
    adaptopt_seg_fn f = tables[adaptopt_get_isa()]->roofline[dtype];
    run_batch(f, dtype == ADAPTOPT_FLOAT32 ? sizeof(float) : sizeof(double), n_arrays, 5, ptr,
              offsets, NULL, n_rw - 1, clamp_threads(n_threads), roofline_threshold[dtype], NULL, 0);
    return ADAPTOPT_OK;
}
