# cython: language_level=3, boundscheck=False, wraparound=False
"""The boundary to the C kernels: arrays to pointers, the GIL released.

No decisions are made here; optim.py decides, csrc/ loops.
"""
from libc.stdint cimport uint64_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "adaptopt.h" nogil:
    ctypedef struct adaptopt_algo_info:
        const char *name
        const char *buffers
        const char *scalars
        const char *flags
        int nbuf, nscal, nflags
    const adaptopt_algo_info *adaptopt_get_algo_info(int algo)
    int adaptopt_step(int algo, int dtype, size_t n_arrays, size_t nbuf,
                      void **ptr, const size_t *offsets, const double *scal,
                      size_t nscal, int flags, int n_threads)
    int adaptopt_roofline(int dtype, size_t n_arrays, void **ptr, const size_t *offsets,
                          int n_rw, int n_threads)
    int adaptopt_get_isa()
    int adaptopt_set_isa(int isa)
    int adaptopt_isa_compiled(int isa)
    int adaptopt_isa_supported(int isa)
    const char *adaptopt_isa_name(int isa)
    int adaptopt_openmp()
    int adaptopt_max_threads()
    int adaptopt_thread_limit()
    size_t adaptopt_get_threshold(int algo, int dtype)
    void adaptopt_set_threshold(int algo, int dtype, size_t n)
    const char *adaptopt_compiler()
    const char *adaptopt_build_flags()
    enum:
        ADAPTOPT_N_ALGOS, ADAPTOPT_N_ISAS, ADAPTOPT_MAX_NSCAL, ADAPTOPT_MAX_NBUF
        ADAPTOPT_OK, ADAPTOPT_EINVAL, ADAPTOPT_ENOISA, ADAPTOPT_ECPU


def _algorithms():
    """{name: {"code", "buffers", "scalars", "flags"}} from csrc/algorithms.h."""
    out = {}
    cdef const adaptopt_algo_info *info
    for code in range(ADAPTOPT_N_ALGOS):
        info = adaptopt_get_algo_info(code)
        names = lambda s: tuple(x for x in s.decode().split(",") if x)
        out[info.name.decode()] = {"code": code, "buffers": names(info.buffers),
                                   "scalars": names(info.scalars), "flags": names(info.flags)}
        assert (len(out[info.name.decode()]["buffers"]), len(out[info.name.decode()]["scalars"]),
                len(out[info.name.decode()]["flags"])) == (info.nbuf, info.nscal, info.nflags)
    return out


ALGORITHMS = _algorithms()
ALGOS = {name: a["code"] for name, a in ALGORITHMS.items()}
OK, EINVAL, ENOISA, ECPU = ADAPTOPT_OK, ADAPTOPT_EINVAL, ADAPTOPT_ENOISA, ADAPTOPT_ECPU
ISAS = tuple(adaptopt_isa_name(i).decode() for i in range(ADAPTOPT_N_ISAS))
MAX_NSCAL = ADAPTOPT_MAX_NSCAL


def flag_bits(algo, *names):
    """The kernel flag bits of algorithm algo (a name) for the flag names given."""
    flags = ALGORITHMS[algo]["flags"]
    return sum(1 << flags.index(n) for n in names)


cdef inline void *_data(cnp.ndarray a, int typenum, Py_ssize_t min_size, str name) except NULL:
    if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.size < min_size:
        raise ValueError(f"{name}: expected a C-contiguous array of type {typenum} "
                         f"with at least {min_size} elements")
    return cnp.PyArray_DATA(a)


def step(int algo, int dtype, cnp.ndarray ptr, size_t nbuf, cnp.ndarray offsets, scal,
         int flags, int n_threads):
    """Run one kernel over a batch; returns the C error code.

    ptr: uint64 addresses, nbuf per array; offsets: uintp, n_arrays + 1;
    scal: a sequence of at most MAX_NSCAL floats."""
    cdef double sc[ADAPTOPT_MAX_NSCAL]
    cdef Py_ssize_t k, nscal = len(scal)
    cdef int rc
    if nscal > ADAPTOPT_MAX_NSCAL:
        raise ValueError(f"at most {ADAPTOPT_MAX_NSCAL} scalars")
    for k in range(nscal):
        sc[k] = scal[k]
    cdef size_t n_arrays = offsets.size - 1 if offsets.size else 0
    cdef size_t *off = <size_t *>_data(offsets, cnp.NPY_UINTP, 1, "offsets")
    cdef void **p = <void **>_data(ptr, cnp.NPY_UINT64, n_arrays * nbuf, "ptr")
    with nogil:
        rc = adaptopt_step(algo, dtype, n_arrays, nbuf, p, off, sc, nscal, flags, n_threads)
    return rc


def roofline(int dtype, cnp.ndarray ptr, cnp.ndarray offsets, int n_rw, int n_threads):
    """Benchmarks only: the bandwidth ceiling over a batch (ptr: 5 addresses per array,
    buffer 1 read, buffers 0 and 2..n_rw read and written); returns the C error code."""
    cdef size_t n_arrays = offsets.size - 1 if offsets.size else 0
    cdef size_t *off = <size_t *>_data(offsets, cnp.NPY_UINTP, 1, "offsets")
    cdef void **p = <void **>_data(ptr, cnp.NPY_UINT64, n_arrays * 5, "ptr")
    cdef int rc
    with nogil:
        rc = adaptopt_roofline(dtype, n_arrays, p, off, n_rw, n_threads)
    return rc


def gather(grads, list params, cnp.ndarray idx, cnp.ndarray ptr, Py_ssize_t stride,
           cnp.ndarray starts, cnp.ndarray ends):
    """For k, i in enumerate(idx): ptr[k*stride + 1] = address of grads[i].

    grads[i] must be an ndarray of params[i]'s dtype and shape, C-contiguous,
    aligned, and outside the memory spans [starts[j], ends[j]) (sorted,
    disjoint).  Returns -1 when all are, else the first k that is not (or
    is None): the caller then takes its general path, which explains."""
    cdef Py_ssize_t k, n = idx.size, m = starts.size, lo, hi, mid
    cdef cnp.intp_t *ix = <cnp.intp_t *>_data(idx, cnp.NPY_INTP, 0, "idx")
    cdef uint64_t *out = <uint64_t *>_data(ptr, cnp.NPY_UINT64, n * stride, "ptr")
    cdef uint64_t *s = <uint64_t *>_data(starts, cnp.NPY_UINT64, 0, "starts")
    cdef uint64_t *e = <uint64_t *>_data(ends, cnp.NPY_UINT64, m, "ends")
    cdef uint64_t a, b
    cdef object g, p
    cdef cnp.ndarray ga, pa
    for k in range(n):
        g = grads[ix[k]]
        p = params[ix[k]]
        if not cnp.PyArray_Check(g):
            return k
        ga, pa = g, p
        if cnp.PyArray_TYPE(ga) != cnp.PyArray_TYPE(pa) or not cnp.PyArray_ISNOTSWAPPED(ga):
            return k
        if cnp.PyArray_NDIM(ga) != cnp.PyArray_NDIM(pa):
            return k
        for mid in range(cnp.PyArray_NDIM(ga)):
            if cnp.PyArray_DIMS(ga)[mid] != cnp.PyArray_DIMS(pa)[mid]:
                return k
        if not cnp.PyArray_IS_C_CONTIGUOUS(ga) or not cnp.PyArray_ISALIGNED(ga):
            return k
        a = <uint64_t>cnp.PyArray_DATA(ga)
        b = a + <uint64_t>cnp.PyArray_NBYTES(ga)
        if b > a:
            lo, hi = 0, m  # the spans starting before b are s[0:lo]
            while lo < hi:
                mid = (lo + hi) // 2
                if s[mid] < b:
                    lo = mid + 1
                else:
                    hi = mid
            if lo > 0 and e[lo - 1] > a:
                return k
        out[k * stride + 1] = a
    return -1


def assign(list dicts, key, value):
    """d[key] = value for each dict d in dicts."""
    cdef dict d
    for d in dicts:
        d[key] = value


def fill_pointers(list arrays, uint64_t[::1] out, Py_ssize_t start, Py_ssize_t stride):
    """out[start + k*stride] = data address of arrays[k] (0 for None)."""
    cdef Py_ssize_t k
    cdef object a
    for k in range(len(arrays)):
        a = arrays[k]
        out[start + k * stride] = 0 if a is None else <uint64_t>cnp.PyArray_DATA(a)


def get_isa():
    return adaptopt_get_isa()

def set_isa(int isa):
    return adaptopt_set_isa(isa)

def isa_compiled(int isa):
    return bool(adaptopt_isa_compiled(isa))

def isa_supported(int isa):
    return bool(adaptopt_isa_supported(isa))

def openmp():
    return bool(adaptopt_openmp())

def max_threads():
    return adaptopt_max_threads()

def thread_limit():
    return adaptopt_thread_limit()

def get_threshold(int algo, int dtype):
    return adaptopt_get_threshold(algo, dtype)

def set_threshold(size_t n, int algo=-1, int dtype=-1):
    adaptopt_set_threshold(algo, dtype, n)

def compiler():
    return adaptopt_compiler().decode()

def build_flags():
    return adaptopt_build_flags().decode()


cdef extern from "adaptopt.h" nogil:
    int adaptopt_adafactor_step(int dtype, size_t batch, size_t rows, size_t cols, void *p,
                                const void *g, void *row_var, void *col_var, void *variance,
                                const double *scal, size_t nscal, int flags, int n_threads)


def adafactor_step(int dtype, size_t batch, size_t rows, size_t cols, uint64_t p, uint64_t g,
                   uint64_t row_var, uint64_t col_var, uint64_t variance, scal, int flags,
                   int n_threads):
    """One Adafactor step of one parameter (csrc/adaptopt.h); addresses as
    integers (0 for NULL), scal a sequence of ADAPTOPT_ADAFACTOR_NSCAL floats;
    returns the C error code."""
    cdef double sc[8]
    cdef Py_ssize_t k, nscal = len(scal)
    cdef int rc
    if nscal > 8:
        raise ValueError("at most 8 scalars")
    for k in range(nscal):
        sc[k] = scal[k]
    with nogil:
        rc = adaptopt_adafactor_step(dtype, batch, rows, cols, <void *>p, <const void *>g,
                                     <void *>row_var, <void *>col_var, <void *>variance, sc,
                                     nscal, flags, n_threads)
    return rc
