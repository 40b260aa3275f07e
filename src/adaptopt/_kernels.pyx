# cython: language_level=3, boundscheck=False, wraparound=False
"""The boundary to the C kernels: arrays to pointers, the GIL released.

No decisions are made here; optim.py decides, csrc/ loops.
"""
from libc.stdint cimport uint64_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "adaptopt.h" nogil:
    int adaptopt_step(int algo, int dtype, size_t n_arrays, size_t nbuf,
                      void **ptr, const size_t *offsets, const double *scal,
                      size_t nscal, int flags, int n_threads)
    int adaptopt_get_isa()
    int adaptopt_set_isa(int isa)
    int adaptopt_isa_compiled(int isa)
    int adaptopt_isa_supported(int isa)
    const char *adaptopt_isa_name(int isa)
    int adaptopt_openmp()
    int adaptopt_max_threads()
    size_t adaptopt_get_threshold()
    void adaptopt_set_threshold(size_t n)
    const char *adaptopt_compiler()
    enum:
        ADAPTOPT_ADAM, ADAPTOPT_ADAGRAD, ADAPTOPT_RMSPROP, ADAPTOPT_SGD, ADAPTOPT_ROOFLINE
        ADAPTOPT_N_ISAS
        ADAPTOPT_MAXIMIZE, ADAPTOPT_L2, ADAPTOPT_DECOUPLED, ADAPTOPT_AMSGRAD
        ADAPTOPT_CENTERED, ADAPTOPT_MOMENTUM, ADAPTOPT_NESTEROV, ADAPTOPT_FIRST
        ADAPTOPT_OK, ADAPTOPT_EINVAL, ADAPTOPT_ENOISA, ADAPTOPT_ECPU

ALGOS = {"adam": ADAPTOPT_ADAM, "adagrad": ADAPTOPT_ADAGRAD, "rmsprop": ADAPTOPT_RMSPROP,
         "sgd": ADAPTOPT_SGD, "roofline": ADAPTOPT_ROOFLINE}
MAXIMIZE, L2, DECOUPLED, AMSGRAD = ADAPTOPT_MAXIMIZE, ADAPTOPT_L2, ADAPTOPT_DECOUPLED, ADAPTOPT_AMSGRAD
CENTERED, MOMENTUM, NESTEROV, FIRST = ADAPTOPT_CENTERED, ADAPTOPT_MOMENTUM, ADAPTOPT_NESTEROV, ADAPTOPT_FIRST
OK, EINVAL, ENOISA, ECPU = ADAPTOPT_OK, ADAPTOPT_EINVAL, ADAPTOPT_ENOISA, ADAPTOPT_ECPU
ISAS = tuple(adaptopt_isa_name(i).decode() for i in range(ADAPTOPT_N_ISAS))


def step(int algo, int dtype, uint64_t[::1] ptr, size_t nbuf, size_t[::1] offsets,
         const double[::1] scal, int flags, int n_threads):
    """Run one kernel over a batch; returns the C error code."""
    cdef int rc
    with nogil:
        rc = adaptopt_step(algo, dtype, offsets.shape[0] - 1, nbuf, <void **>&ptr[0],
                           &offsets[0], &scal[0] if scal.shape[0] else NULL,
                           scal.shape[0], flags, n_threads)
    return rc


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

def get_threshold():
    return adaptopt_get_threshold()

def set_threshold(size_t n):
    adaptopt_set_threshold(n)

def compiler():
    return adaptopt_compiler().decode()
