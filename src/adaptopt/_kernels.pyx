# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled module: the boundary to the C kernels and the engine's
per-step checks.

The boundary (step, roofline, the configuration functions) converts and
releases the GIL; it decides nothing.  The engine part (Batch, run) holds
the arrays a kernel call addresses and re-checks them every step: what can
change between steps is checked here, in C, so that no Python input can
make a kernel touch memory it does not own.  What to do about a failed
check (an error message, a new plan) is decided in Python.
"""
from cpython.dict cimport PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport (PyLong_AsLongLong, PyLong_AsSsize_t, PyLong_AsUnsignedLongLong,
                           PyLong_CheckExact)
from cpython.object cimport PyObject, PyObject_RichCompareBool, PyTypeObject, Py_EQ, Py_TYPE
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int32_t, int64_t, uint64_t, uintptr_t
from libc.string cimport memcmp, memset
cimport numpy as cnp

import numpy as np

cnp.import_array()


cdef extern from "Python.h":
    PyObject *_dict_get "PyDict_GetItemWithError"(object, object)
    PyObject *PyErr_Occurred()
    void PyErr_Clear()


cdef inline PyObject *_dget(object d, object key) noexcept:
    """d[key] (borrowed) or NULL, as PyDict_GetItem, without its saving and
    restoring of the error state on every call (an error in a key's __eq__
    is cleared: not found)."""
    cdef PyObject *v = _dict_get(d, key)
    if v == NULL and PyErr_Occurred() != NULL:
        PyErr_Clear()
    return v


cdef inline uint64_t _nbytes(cnp.ndarray a) noexcept:
    """a.nbytes, inline (PyArray_NBYTES calls through NumPy's API table)."""
    cdef uint64_t n = <uint64_t>cnp.PyArray_ITEMSIZE(a)
    cdef const cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    cdef int k
    for k in range(cnp.PyArray_NDIM(a)):
        n *= <uint64_t>d[k]
    return n

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
    int adaptopt_step_strided(int algo, int dtype, size_t n_arrays, size_t nbuf,
                              void **ptr, const int64_t **gdesc, const size_t *offsets,
                              const double *scal, size_t nscal, int flags, int n_threads)
    int adaptopt_set_thread_guard(int on)
    long long adaptopt_thread_guard_trips()
    int adaptopt_roofline(int dtype, size_t n_arrays, void **ptr, const size_t *offsets,
                          int n_rw, int n_threads)
    ctypedef struct adaptopt_staging:
        int compute
        unsigned char storage[8]
        unsigned char stochastic[8]
        int mirror, mirror_stochastic
        uint64_t seed, step
        const uint64_t *array_ids
        double grad_div, grad_mul
        int grad_writeback
        const int64_t **gdesc
    int adaptopt_step_staged(int algo, const adaptopt_staging *st, size_t n_arrays, size_t nbuf,
                             void **ptr, void **aux, const size_t *offsets, const double *scal,
                             size_t nscal, int flags, int n_threads)
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
        ADAPTOPT_N_ALGOS, ADAPTOPT_N_ISAS, ADAPTOPT_MAX_NSCAL, ADAPTOPT_MAX_NBUF, ADAPTOPT_MAX_NDIM
        ADAPTOPT_OK, ADAPTOPT_EINVAL, ADAPTOPT_ENOISA, ADAPTOPT_ECPU
        ADAPTOPT_STORE_COMPUTE, ADAPTOPT_STORE_F32, ADAPTOPT_STORE_F64, ADAPTOPT_STORE_BF16
        ADAPTOPT_STORE_F16, ADAPTOPT_BLOCK, ADAPTOPT_STORE_Q8_SIGNED, ADAPTOPT_STORE_Q8_UNSIGNED


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


cdef Py_ssize_t _scalars(scal, double *sc) except -1:
    """scal (at most MAX_NSCAL floats) copied into sc; their count."""
    cdef Py_ssize_t k, nscal = len(scal)
    if nscal > ADAPTOPT_MAX_NSCAL:
        raise ValueError(f"at most {ADAPTOPT_MAX_NSCAL} scalars")
    for k in range(nscal):
        sc[k] = scal[k]
    return nscal


def step(int algo, int dtype, cnp.ndarray ptr, size_t nbuf, cnp.ndarray offsets, scal,
         int flags, int n_threads):
    """Run one kernel over a batch; returns the C error code.

    ptr: uint64 addresses, nbuf per array; offsets: uintp, n_arrays + 1;
    scal: a sequence of at most MAX_NSCAL floats."""
    cdef double sc[ADAPTOPT_MAX_NSCAL]
    cdef Py_ssize_t nscal = _scalars(scal, sc)
    cdef int rc
    cdef size_t n_arrays = offsets.size - 1 if offsets.size else 0
    cdef size_t *off = <size_t *>_data(offsets, cnp.NPY_UINTP, 1, "offsets")
    cdef void **p = <void **>_data(ptr, cnp.NPY_UINT64, n_arrays * nbuf, "ptr")
    with nogil:
        rc = adaptopt_step(algo, dtype, n_arrays, nbuf, p, off, sc, nscal, flags, n_threads)
    return rc


STORE_COMPUTE, STORE_F32, STORE_F64, STORE_BF16, STORE_F16 = (
    ADAPTOPT_STORE_COMPUTE, ADAPTOPT_STORE_F32, ADAPTOPT_STORE_F64, ADAPTOPT_STORE_BF16,
    ADAPTOPT_STORE_F16)
BLOCK = ADAPTOPT_BLOCK
STORE_Q8_SIGNED, STORE_Q8_UNSIGNED = ADAPTOPT_STORE_Q8_SIGNED, ADAPTOPT_STORE_Q8_UNSIGNED


cdef class Staging:
    """An adaptopt_staging (csrc/adaptopt.h): how each buffer of a kernel
    call is stored, its rounding, the master weight's copy, the gradient's
    scaling.  storage and stochastic: one entry per buffer."""
    cdef adaptopt_staging st
    cdef cnp.ndarray _ids

    def __init__(self, int compute, storage, stochastic=(), int mirror=0,
                 bint mirror_stochastic=False, uint64_t seed=0, array_ids=None):
        cdef Py_ssize_t k
        if len(storage) > ADAPTOPT_MAX_NBUF or len(stochastic) > ADAPTOPT_MAX_NBUF:
            raise ValueError(f"at most {ADAPTOPT_MAX_NBUF} buffers")
        self.st.compute = compute
        for k in range(ADAPTOPT_MAX_NBUF):
            self.st.storage[k] = storage[k] if k < len(storage) else 0
            self.st.stochastic[k] = bool(stochastic[k]) if k < len(stochastic) else 0
        self.st.mirror, self.st.mirror_stochastic = mirror, mirror_stochastic
        self.st.seed, self.st.step = seed, 0
        self.st.grad_div, self.st.grad_mul, self.st.grad_writeback = 0.0, 1.0, 0
        self.st.gdesc = NULL
        self._ids = None
        self.st.array_ids = NULL
        if array_ids is not None:
            self._ids = np.ascontiguousarray(array_ids, dtype=np.uint64)
            self.st.array_ids = <const uint64_t *>cnp.PyArray_DATA(self._ids)

    def scale(self, double grad_div=0.0, double grad_mul=1.0, bint writeback=False):
        """The gradient's scaling for the next calls: g / grad_div (0: none) * grad_mul."""
        self.st.grad_div, self.st.grad_mul, self.st.grad_writeback = grad_div, grad_mul, writeback

    @property
    def step(self):
        return self.st.step

    @step.setter
    def step(self, uint64_t t):
        self.st.step = t


def step_staged(int algo, Staging st, cnp.ndarray ptr, aux, size_t nbuf, cnp.ndarray offsets,
                scal, int flags, int n_threads):
    """step() over staged buffers (adaptopt_step_staged); aux: uint64 addresses,
    nbuf per array, or None.  Returns the C error code."""
    cdef double sc[ADAPTOPT_MAX_NSCAL]
    cdef Py_ssize_t nscal = _scalars(scal, sc)
    cdef int rc
    cdef size_t n_arrays = offsets.size - 1 if offsets.size else 0
    cdef size_t *off = <size_t *>_data(offsets, cnp.NPY_UINTP, 1, "offsets")
    cdef void **p = <void **>_data(ptr, cnp.NPY_UINT64, n_arrays * nbuf, "ptr")
    cdef void **a = NULL
    if aux is not None:
        a = <void **>_data(aux, cnp.NPY_UINT64, n_arrays * nbuf, "aux")
    if st.st.array_ids != NULL and st._ids.size < <Py_ssize_t>n_arrays:
        raise ValueError("array_ids: one per array")
    with nogil:
        rc = adaptopt_step_staged(algo, &st.st, n_arrays, nbuf, p, a, off, sc, nscal, flags,
                                  n_threads)
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


# ---------------------------------------------------------------------------
# The engine's compiled part.  A Batch is one kernel call of a step.  It
# holds a reference to every array it addresses and, every step, re-checks
# in C that each still has the address, size, dtype and writability the
# pointer table was built from, that each state buffer is still the object
# in its state dict, and that each row's counters hold what the scalars were
# computed for; then it checks and addresses the gradients.  A check is a
# predicate: any difference answers "not this plan" and the front end's full
# validation explains it (an error naming the argument) or builds a new plan.
# run() makes every kernel call of a step and writes every counter in one
# call, with no Python code in between, so a step is applied whole or not at
# all (a KeyboardInterrupt is raised once it has returned).

# --- torch tensors read in C ----------------------------------------------------
# libtorch exports a stable C ABI for compiled models (AOTInductor's shim:
# aoti_torch_get_data_ptr and friends, taking an at::Tensor *).  When
# adaptopt.torch has found it and checked where a tensor object keeps its
# at::Tensor (torch_shim below), the per-step checks read a plain
# torch.Tensor or Parameter through it: a few C calls per tensor instead of
# a dozen Python attribute calls.  Anything else (a subclass, a tensor the
# shim cannot read) goes the Python way, so the shim decides nothing alone.
ctypedef int32_t (*_f_ptr)(void *, void **) noexcept nogil
ctypedef int32_t (*_f_i64)(void *, int64_t *) noexcept nogil
ctypedef int32_t (*_f_i64p)(void *, int64_t **) noexcept nogil
ctypedef int32_t (*_f_i32)(void *, int32_t *) noexcept nogil

cdef struct _Shim:
    bint on
    long long reads  # rows the C reading has passed (tests)
    Py_ssize_t off  # the at::Tensor's offset in the Python object
    PyTypeObject *tensor
    PyTypeObject *param
    _f_ptr data_ptr
    _f_i64 numel, dim
    _f_i64p sizes, strides
    _f_i32 dtype, device, layout
    _f_i64 storage_offset, storage_size
    int32_t cpu, strided
    int64_t es[64]  # element size by dtype code (0: not a dtype adaptopt reads)

cdef _Shim _shim
cdef dict _shim_codes = {}  # torch dtype -> shim dtype code
cdef list _shim_refs = []   # the type objects _shim points at


cdef inline void *_handle(object o) noexcept:
    """o's at::Tensor when o is exactly a torch.Tensor or Parameter (and the
    shim is on), else NULL."""
    cdef PyTypeObject *t = Py_TYPE(o)
    if not _shim.on or (t != _shim.tensor and t != _shim.param):
        return NULL
    return <void *>(<char *><PyObject *>o + _shim.off)


cdef inline int64_t _dense_cpu(void *h, int32_t code) noexcept:
    """Tensor h's size in bytes if it is a strided CPU tensor of dtype code
    (negative: any dtype adaptopt reads), else -1."""
    cdef int32_t v
    cdef int64_t n
    if _shim.layout(h, &v) or v != _shim.strided or _shim.device(h, &v) or v != _shim.cpu:
        return -1
    if _shim.dtype(h, &v) or v < 0 or v >= 64 or _shim.es[v] == 0 or (code >= 0 and v != code):
        return -1
    if _shim.numel(h, &n) or n < 0:
        return -1
    return n * _shim.es[v]


cdef inline bint _in_storage(void *h, uint64_t d, uint64_t lo, uint64_t hi,
                             int64_t es) noexcept:
    """Tensor h (data pointer d) reaches [lo, hi) inside its storage (not so
    after untyped_storage().resize_: torch does not check it)."""
    cdef int64_t off, size
    if hi <= lo:
        return True
    if _shim.storage_offset(h, &off) or _shim.storage_size(h, &size) or off < 0:
        return False
    return lo >= d - <uint64_t>(off * es) and hi <= d - <uint64_t>(off * es) + <uint64_t>size


cdef enum:
    _ANY_DTYPE = -2  # _tensor_holds: any dtype the shim reads (-1: no code known)


cdef inline bint _tensor_holds(object o, uint64_t ptr, uint64_t nb, int32_t code) noexcept:
    """Tensor o is (through the shim) a CPU tensor of dtype code at ptr, nb
    bytes, inside its storage; code _ANY_DTYPE: of any dtype the shim reads,
    -1 (no code known): never (the Python reading decides)."""
    cdef void *h = _handle(o)
    cdef void *d
    if (h == NULL or code == -1 or _dense_cpu(h, code) != <int64_t>nb
            or _shim.data_ptr(h, &d) or (code == _ANY_DTYPE and _shim.dtype(h, &code))):
        return False
    return <uint64_t>d == ptr and _in_storage(h, ptr, ptr, ptr + nb, _shim.es[code])


def torch_shim(dict fns, tensor_type, param_type, dict codes, list probes):
    """Turn the C reading of tensors on: fns maps each aoti_torch_* name to
    its address, codes each torch dtype to (shim code, element size); probes
    are tensors of varied layouts, read both ways and compared first.  True
    when on; with fns empty, turns it off."""
    cdef Py_ssize_t off, k
    cdef object t
    cdef void *h
    cdef void *d
    cdef int64_t n
    cdef int64_t *sz
    cdef int64_t *st
    cdef int32_t v
    _shim.on = False
    if not fns:
        return False
    _shim.data_ptr = <_f_ptr><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_data_ptr"])
    _shim.numel = <_f_i64><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_numel"])
    _shim.dim = <_f_i64><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_dim"])
    _shim.sizes = <_f_i64p><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_sizes"])
    _shim.strides = <_f_i64p><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_strides"])
    _shim.dtype = <_f_i32><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_dtype"])
    _shim.device = <_f_i32><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_device_type"])
    _shim.layout = <_f_i32><uintptr_t>PyLong_AsUnsignedLongLong(fns["aoti_torch_get_layout"])
    _shim.storage_offset = <_f_i64><uintptr_t>PyLong_AsUnsignedLongLong(
        fns["aoti_torch_get_storage_offset"])
    _shim.storage_size = <_f_i64><uintptr_t>PyLong_AsUnsignedLongLong(
        fns["aoti_torch_get_storage_size"])
    _shim.cpu, _shim.strided = fns["cpu"], fns["strided"]
    memset(_shim.es, 0, sizeof(_shim.es))
    for dt, (code, size) in codes.items():
        if not 0 <= code < 64:
            return False
        _shim.es[code] = size
    _shim_codes.clear()
    _shim_codes.update({dt: c for dt, (c, _) in codes.items()})
    _shim_refs[:] = [tensor_type, param_type]
    _shim.tensor, _shim.param = <PyTypeObject *>tensor_type, <PyTypeObject *>param_type
    # where the at::Tensor sits: the word holding the tensor's TensorImpl
    # pointer (t._cdata) right after the object header, in every probe
    off = sizeof(PyObject)
    for t in probes:
        if Py_TYPE(t) != _shim.tensor and Py_TYPE(t) != _shim.param:
            return False
        if <uintptr_t>(<void **>(<char *><PyObject *>t + off))[0] != <uintptr_t>t._cdata:
            return False
    _shim.off, _shim.on = off, True
    for t in probes:  # and every fact read through it is what Python reads
        h = _handle(t)
        ok = (_dense_cpu(h, _shim_codes.get(t.dtype, -2)) == t.nbytes
              and not _shim.data_ptr(h, &d) and <uintptr_t>d == <uintptr_t>t.data_ptr()
              and not _shim.dim(h, &n) and n == t.dim()
              and not _shim.sizes(h, &sz) and not _shim.strides(h, &st)
              and _in_storage(h, <uintptr_t>d, <uintptr_t>d, <uintptr_t>d + t.nbytes,
                              t.element_size()))
        for k in range(t.dim() if ok else 0):
            ok = ok and sz[k] == t.shape[k] and st[k] == t.stride(k)
        if not ok:
            _shim.on = False
            return False
    return True


def torch_shim_on():
    """Whether the compiled checks read tensors through libtorch's C shim."""
    return bool(_shim.on)


def torch_shim_reads():
    """How many rows the C reading has passed so far."""
    return _shim.reads


cdef enum:
    _NUMPY = 0
    _TORCH = 1

KIND_NUMPY, KIND_TORCH = _NUMPY, _TORCH


cdef inline bint _spans_hit(const uint64_t *s, const uint64_t *e, Py_ssize_t m,
                            uint64_t a, uint64_t b) noexcept:
    """[a, b) overlaps one of the sorted, disjoint spans [s[i], e[i])."""
    cdef Py_ssize_t lo = 0, hi = m, mid
    if b <= a:
        return False
    while lo < hi:  # the spans starting before b are s[0:lo]
        mid = (lo + hi) // 2
        if s[mid] < b:
            lo = mid + 1
        else:
            hi = mid
    return lo > 0 and e[lo - 1] > a


cdef class Spans:
    """The memory a plan writes: sorted, disjoint [start, end) spans."""
    cdef cnp.ndarray _s, _e
    cdef const uint64_t *s
    cdef const uint64_t *e
    cdef readonly Py_ssize_t m

    def __init__(self, starts, ends):
        self._s = np.ascontiguousarray(starts, dtype=np.uint64)
        self._e = np.ascontiguousarray(ends, dtype=np.uint64)
        self.m = self._s.size
        self.s = <const uint64_t *>cnp.PyArray_DATA(self._s)
        self.e = <const uint64_t *>cnp.PyArray_DATA(self._e)


cdef inline bint _same(PyObject *v, object want):
    """v holds want: the same object, or an equal one of the same type."""
    if v == NULL:
        return False
    if <object>v is want:
        return True
    return type(<object>v) is type(want) and PyObject_RichCompareBool(<object>v, want, Py_EQ)


cdef class Batch:
    """One kernel call: n rows (arrays) of one algorithm and dtype.

    objs[r*nbuf + k] is row r's buffer k (None for the gradient and unused
    slots); keys[k] its key in the row's state dict (None for p, g, unused).
    t: the step the rows take next; every row's state['step'] must be t - 1
    (NumPy rows: an int in the dict; torch rows: step_pack), and run() writes
    t and counts t on.  counters: other (key, expected, new) state values
    every row must hold before the step and gets after it (NumPy rows:
    Python values in the dict).  packs: (key, array, positions, views,
    expected, new) for torch rows, whose counters are 0-d views of one
    tensor per group (torch's state['step'] layout): views[r] must still be
    the object in row r's state dict and array[positions] (None: all of it)
    the expected value; step_pack is (array, positions, views) of 'step'.
    index[r] (NumPy rows): the row's position in the gradient list and its
    key in the state mapping.

    Staged rows (stage(): 16-bit or mixed storage, a master weight): keys[0]
    may name a state buffer (the float32 master), and aux buffers are held
    and checked like the others: akeys[k] the state key of buffer k's aux
    array ("" for the parameter itself: a master weight's 16-bit copy),
    aobjs[r*nbuf + k] the arrays.  gdtype: the gradient's dtype when it is
    not the parameter's (NumPy: a numpy dtype; torch: a torch dtype).
    """
    cdef readonly int algo, dtype, nbuf, n, kind
    cdef public int flags
    cdef readonly Py_ssize_t nscal
    cdef double sc[ADAPTOPT_MAX_NSCAL]
    cdef cnp.ndarray _ptr, _off, _nb
    cdef uint64_t *ptr
    cdef size_t *off
    cdef uint64_t *nb
    cdef readonly list objs, states, index, shapes
    cdef readonly tuple keys
    cdef public list counters, packs
    cdef public long long t
    cdef public object step_pack
    cdef public bint has_step
    cdef readonly object dtype_obj, gdtype_obj
    cdef int typenum
    cdef readonly Staging staging
    cdef readonly tuple akeys, sdtype
    cdef readonly list aobjs
    cdef cnp.ndarray _aptr, _anb
    cdef uint64_t *aptr
    cdef uint64_t *anb
    # gradient layouts: per row, at doff[r] in gd, {nd, shape, strides} of
    # the gradient in the parameter's memory order (nd 0: always direct),
    # in pm the parameter dimension of each (~dim: reversed); gp[r] the
    # descriptor's address when this step's gradient is strided, else 0;
    # low[r]: the parameter's lowest element minus its first (elements, <= 0)
    cdef cnp.ndarray _gd, _pm, _gp, _low, _doff
    cdef int64_t *gd
    cdef int64_t *pm
    cdef uint64_t *gp
    cdef int64_t *low
    cdef Py_ssize_t *doff
    cdef readonly int nstrided
    cdef readonly list pstrides
    cdef cnp.ndarray _pc  # per row: the parameter is C-contiguous
    cdef unsigned char *pc
    # torch rows: at tsho[r] in tsh, {nd, shape, strides (elements)} of the
    # parameter; the shim's dtype codes of p (dcode), the gradient (gcode)
    # and each buffer (scode); -1 where the shim has none
    cdef cnp.ndarray _tsh, _tsho
    cdef int64_t *tsh
    cdef Py_ssize_t *tsho
    cdef int32_t dcode, gcode
    cdef int32_t scode[ADAPTOPT_MAX_NBUF]

    def __init__(self, int kind, int algo, int dtype, tuple keys, list objs, list states,
                 ptrs, nbytes, sizes, list index=None, dtype_obj=None, list shapes=None):
        cdef Py_ssize_t k
        self.kind, self.algo, self.dtype = kind, algo, dtype
        self.nbuf = len(keys)
        self.n = len(states)
        if len(objs) != self.n * self.nbuf:
            raise ValueError("objs must have n * nbuf entries")
        if kind == _NUMPY and (index is None or len(index) != self.n):
            raise ValueError("NumPy rows need an index per row")
        if kind == _TORCH and (shapes is None or len(shapes) != self.n):
            raise ValueError("torch rows need a shape per row")
        self.keys, self.objs, self.states, self.index, self.shapes = keys, objs, states, index, shapes
        self._ptr = np.array(ptrs, dtype=np.uint64).reshape(-1)
        self._nb = np.array(nbytes, dtype=np.uint64).reshape(-1)
        if self._ptr.size != self.n * self.nbuf or self._nb.size != self.n * self.nbuf:
            raise ValueError("ptrs and nbytes must have n * nbuf entries")
        self._off = np.zeros(self.n + 1, dtype=np.uintp)
        np.cumsum(np.asarray(sizes, dtype=np.uintp), out=self._off[1:])
        self.ptr = <uint64_t *>cnp.PyArray_DATA(self._ptr)
        self.nb = <uint64_t *>cnp.PyArray_DATA(self._nb)
        self.off = <size_t *>cnp.PyArray_DATA(self._off)
        self.counters, self.packs = [], []
        self.t, self.step_pack, self.has_step = 1, None, True
        self.dtype_obj = dtype_obj
        self.typenum = cnp.PyArray_TYPE(<cnp.ndarray>objs[0]) if kind == _NUMPY and self.n else -1
        self.gdtype_obj = dtype_obj
        self.nscal = 0
        self.flags = 0
        self.staging = None
        self.akeys = None
        self.aobjs = None
        self.aptr = self.anb = NULL
        self.dcode = self.gcode = _shim_codes.get(dtype_obj, -1)
        for k in range(ADAPTOPT_MAX_NBUF):
            self.scode[k] = self.dcode
        self._layouts(objs)

    def stage(self, Staging staging, gdtype=None, tuple akeys=None, list aobjs=None,
              tuple sdtype=None):
        """Make the rows staged: the kernel call is adaptopt_step_staged.
        gdtype: the gradient's dtype if not the parameter's; akeys/aobjs: the
        aux buffers (see the class docstring); sdtype (torch rows): each
        buffer's dtype."""
        cdef Py_ssize_t k
        self.staging = staging
        self.sdtype = sdtype
        for k in range(len(sdtype) if sdtype is not None and self.kind == _TORCH else 0):
            self.scode[k] = _shim_codes.get(sdtype[k], -1)
        if gdtype is not None:
            self.gdtype_obj = gdtype
            self.gcode = _shim_codes.get(gdtype, -1)
            if self.kind == _NUMPY:
                self.typenum = (<cnp.dtype>np.dtype(gdtype)).type_num
        if akeys is not None:
            if len(akeys) != self.nbuf or len(aobjs) != self.n * self.nbuf:
                raise ValueError("akeys: nbuf entries; aobjs: n * nbuf")
            self.akeys, self.aobjs = akeys, aobjs
            self._aptr = np.array([0 if a is None else _address_of(a, self.kind)
                                   for a in aobjs], dtype=np.uint64)
            self._anb = np.array([0 if a is None else a.nbytes for a in aobjs], dtype=np.uint64)
            self.aptr = <uint64_t *>cnp.PyArray_DATA(self._aptr)
            self.anb = <uint64_t *>cnp.PyArray_DATA(self._anb)

    def _layouts(self, list objs):
        """Each row's parameter layout: its memory order for strided gradients."""
        orders, low, self.pstrides = [], [], [] if self.kind == _TORCH else None
        self._pc = np.zeros(max(self.n, 1), dtype=np.uint8)
        for r in range(self.n):
            p = objs[r * self.nbuf]
            if self.kind == _NUMPY:
                shape, strides = p.shape, p.strides
                self._pc[r] = p.flags.c_contiguous
            else:
                es = p.element_size()
                shape, strides = tuple(p.shape), tuple(x * es for x in p.stride())
                self.pstrides.append(tuple(p.stride()))
            order, lo = memory_order(shape, strides)
            orders.append(order)
            low.append(lo // (p.itemsize if self.kind == _NUMPY else p.element_size()))
        if self.kind == _TORCH:
            shapes = [list(sh) + list(st) for sh, st in zip(self.shapes, self.pstrides)]
            self._tsho = np.zeros(self.n + 1, dtype=np.intp)
            np.cumsum([1 + len(x) for x in shapes], out=self._tsho[1:])
            self._tsh = np.array([v for x in shapes for v in [len(x) // 2] + x] or [0],
                                 dtype=np.int64)
            self.tsh = <int64_t *>cnp.PyArray_DATA(self._tsh)
            self.tsho = <Py_ssize_t *>cnp.PyArray_DATA(self._tsho)
        sizes = [1 + 2 * len(o) for o in orders]
        self._doff = np.zeros(self.n + 1, dtype=np.intp)
        np.cumsum(np.asarray(sizes, dtype=np.intp), out=self._doff[1:])
        self._gd = np.zeros(max(int(self._doff[self.n]), 1), dtype=np.int64)
        self._pm = np.zeros_like(self._gd)
        for r, o in enumerate(orders):
            d = self._doff[r]
            self._gd[d] = len(o)
            for k, (dim, size) in enumerate(o):
                self._gd[d + 1 + k] = size
                self._pm[d + 1 + k] = dim
        self._gp = np.zeros(max(self.n, 1), dtype=np.uint64)
        self._low = np.array(low or [0], dtype=np.int64)
        self.gd = <int64_t *>cnp.PyArray_DATA(self._gd)
        self.pm = <int64_t *>cnp.PyArray_DATA(self._pm)
        self.gp = <uint64_t *>cnp.PyArray_DATA(self._gp)
        self.low = <int64_t *>cnp.PyArray_DATA(self._low)
        self.doff = <Py_ssize_t *>cnp.PyArray_DATA(self._doff)
        self.pc = <unsigned char *>cnp.PyArray_DATA(self._pc)
        self.nstrided = 0

    cdef uint64_t _strided(self, Py_ssize_t r, uint64_t data, const int64_t *st,
                           const int64_t *dims, Py_ssize_t ndim, uint64_t es,
                           uint64_t *lo, uint64_t *hi) noexcept:
        """Row r's gradient at data with byte strides st: its descriptor
        filled in, its memory span [lo, hi); returns the address of the
        element the descriptor starts from."""
        cdef int64_t *d = self.gd + self.doff[r]
        cdef const int64_t *m = self.pm + self.doff[r]
        cdef Py_ssize_t k, nd = d[0]
        cdef int64_t x, dim, a = 0, b = 0, base = <int64_t>data
        for k in range(ndim):
            x = st[k] * (dims[k] - 1)
            if x < 0:
                a += x
            else:
                b += x
        lo[0] = <uint64_t>(<int64_t>data + a)
        hi[0] = <uint64_t>(<int64_t>data + b) + es
        for k in range(nd):
            dim = m[1 + k]
            if dim < 0:
                dim = ~dim
                base += st[dim] * (d[1 + k] - 1)
                d[1 + nd + k] = -st[dim]
            else:
                d[1 + nd + k] = st[dim]
        self.gp[r] = <uint64_t>d
        self.nstrided += 1
        return <uint64_t>base

    def set_scalars(self, int flags, fixed, tuple positions=(), tuple step_values=()):
        """The next call's flags and scalars: fixed (kernel order), with
        step_values at positions."""
        cdef Py_ssize_t k, m = len(fixed)
        if m > ADAPTOPT_MAX_NSCAL:
            raise ValueError(f"at most {ADAPTOPT_MAX_NSCAL} scalars")
        for k in range(len(positions)):
            self.sc[<Py_ssize_t>positions[k]] = step_values[k]
        for k in range(m):
            if fixed[k] is not None:
                self.sc[k] = fixed[k]
        self.nscal = m
        self.flags = flags

    cdef bint _aux_hold(self, Py_ssize_t r, object st, bint c=False) except -1:
        """Row r's aux buffers are the objects, addresses and sizes of the
        table (c: torch tensors read through the shim)."""
        cdef Py_ssize_t k, j = r * self.nbuf
        cdef PyObject *b
        cdef object a, key
        for k in range(self.nbuf):
            key = self.akeys[k]
            if key is None:
                continue
            a = <object>PyList_GET_ITEM(self.aobjs, j + k)
            if key != "":
                b = _dget(st, key)
                if b == NULL or <object>b is not a:
                    return False
            if c:
                if not _tensor_holds(a, self.aptr[j + k], self.anb[j + k], _ANY_DTYPE):
                    return False
            elif self.kind == _TORCH:
                if (<uint64_t>a.data_ptr() != self.aptr[j + k]
                        or <uint64_t>a.nbytes != self.anb[j + k]
                        or not _in_storage_py(a, self.aptr[j + k], self.anb[j + k])):
                    return False
            elif (_lowest(<cnp.ndarray>a) != self.aptr[j + k]
                    or <uint64_t>_nbytes(<cnp.ndarray>a) != self.anb[j + k]
                    or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)):
                return False
        return True

    def check_numpy(self, grads, Spans spans, dict state_map):
        """-1 when every row and its gradient are what the table needs (the
        gradient addresses are then filled in), else the first row that is not.
        grads: a list or a tuple."""
        cdef Py_ssize_t r, k, d, j, ng = len(grads)
        cdef bint is_list = type(grads) is list
        cdef PyObject *gp
        if not is_list and type(grads) is not tuple:
            return 0
        cdef PyObject *st
        cdef PyObject *b
        cdef object g, key
        cdef cnp.ndarray ga, pa, a
        cdef uint64_t lo, hi, base
        cdef tuple c
        cdef int nd
        self.nstrided = 0
        for r in range(self.n):
            j = r * self.nbuf
            pa = <cnp.ndarray>PyList_GET_ITEM(self.objs, j)
            if (<uint64_t>(<int64_t>cnp.PyArray_DATA(pa) + self.low[r] * cnp.PyArray_ITEMSIZE(pa))
                    != self.ptr[j]
                    or <uint64_t>_nbytes(pa) != self.nb[j]
                    or not cnp.PyArray_ISWRITEABLE(pa)):
                return r
            st = _dget(state_map, <object>PyList_GET_ITEM(self.index, r))
            if st == NULL or st != PyList_GET_ITEM(self.states, r):
                return r
            for k in range(self.nbuf):
                key = self.keys[k]
                if key is None:
                    continue
                b = _dget(<object>st, key)
                if b == NULL or b != PyList_GET_ITEM(self.objs, j + k):
                    return r
                a = <cnp.ndarray>b  # p's strides (checked when the plan was made)
                if (<uint64_t>(<int64_t>cnp.PyArray_DATA(a) + self.low[r] * cnp.PyArray_ITEMSIZE(a))
                        != self.ptr[j + k]
                        or <uint64_t>_nbytes(a) != self.nb[j + k]
                        or not cnp.PyArray_ISWRITEABLE(a)):
                    return r
            if self.akeys is not None and not self._aux_hold(r, <object>st):
                return r
            if self.has_step:
                b = _dget(<object>st, "step")
                if b == NULL or not PyLong_CheckExact(<object>b) or \
                        PyLong_AsLongLong(<object>b) != self.t - 1:
                    return r
            if self.counters:
                for c in self.counters:
                    if not _same(_dget(<object>st, c[0]), c[1]):
                        return r
            d = PyLong_AsSsize_t(<object>PyList_GET_ITEM(self.index, r))
            if d >= ng:
                return r
            gp = PyList_GET_ITEM(grads, d) if is_list else PyTuple_GET_ITEM(grads, d)
            if not cnp.PyArray_Check(<object>gp):
                return r
            ga = <cnp.ndarray>gp
            nd = cnp.PyArray_NDIM(ga)
            if (cnp.PyArray_TYPE(ga) != self.typenum or not cnp.PyArray_ISNOTSWAPPED(ga)
                    or nd != cnp.PyArray_NDIM(pa) or not cnp.PyArray_ISALIGNED(ga)):
                return r
            for k in range(nd):
                if cnp.PyArray_DIMS(ga)[k] != cnp.PyArray_DIMS(pa)[k]:
                    return r
            lo = <uint64_t>cnp.PyArray_DATA(ga)
            if self.gd[self.doff[r]] == 0 or (self.pc[r] and cnp.PyArray_IS_C_CONTIGUOUS(ga)) or (
                    cnp.PyArray_ITEMSIZE(ga) == cnp.PyArray_ITEMSIZE(pa) and memcmp(
                        cnp.PyArray_STRIDES(ga), cnp.PyArray_STRIDES(pa),
                        nd * sizeof(cnp.npy_intp)) == 0):  # p's element order: as it is
                lo = <uint64_t>(<int64_t>lo + self.low[r] * cnp.PyArray_ITEMSIZE(ga))
                hi = lo + <uint64_t>_nbytes(ga)
                self.gp[r] = 0
                base = lo
            else:
                base = self._strided(r, lo, <const int64_t *>cnp.PyArray_STRIDES(ga),
                                     <const int64_t *>cnp.PyArray_DIMS(ga), nd,
                                     <uint64_t>cnp.PyArray_ITEMSIZE(ga), &lo, &hi)
            if _spans_hit(spans.s, spans.e, spans.m, lo, hi):
                return r
            self.ptr[j + 1] = base
        return -1

    def check_torch(self, Spans spans, strided):
        """As check_numpy, for torch tensors; the gradients are p.grad."""
        cdef Py_ssize_t r
        self.nstrided = 0
        for r in range(self.n):
            if not (self._row_shim(r, spans) or self._row_torch(r, spans, strided)):
                return r
        if self.step_pack is not None and not _pack_holds(self.step_pack[0], self.step_pack[1],
                                                          <double>(self.t - 1)):
            return 0
        for pk in self.packs:
            if not _pack_holds(pk[1], pk[2], pk[4]):
                return 0
        return -1

    cdef bint _state_held(self, Py_ssize_t r, object st, bint c) except -1:
        """Row r's state dict st still holds its buffers, aux buffers and
        counters, each buffer at its address with its dtype and size inside
        its storage (torch rows; c: read through the shim, else Python)."""
        cdef Py_ssize_t k, j = r * self.nbuf
        cdef PyObject *b
        cdef object t, key
        for k in range(self.nbuf):
            key = self.keys[k]
            if key is None:
                continue
            b = _dget(st, key)
            if b == NULL or b != PyList_GET_ITEM(self.objs, j + k):
                return False
            t = <object>b
            if c:
                if not _tensor_holds(t, self.ptr[j + k], self.nb[j + k], self.scode[k]):
                    return False
            elif (<uint64_t>t.data_ptr() != self.ptr[j + k]
                    or t.dtype is not (self.dtype_obj if self.staging is None
                                       else self.sdtype[k])
                    or <uint64_t>t.nbytes != self.nb[j + k]
                    or not _in_storage_py(t, self.ptr[j + k], self.nb[j + k])):
                return False
        if self.akeys is not None and not self._aux_hold(r, st, c):
            return False
        return self._counters_held(r, st)

    cdef bint _counters_held(self, Py_ssize_t r, object st) except -1:
        """Row r's state dict holds its step and counter views (torch rows)."""
        cdef PyObject *b
        cdef tuple pk
        if self.step_pack is not None:
            b = _dget(st, "step")
            if b == NULL or b != PyList_GET_ITEM(self.step_pack[2], r):
                return False
        for pk in self.packs:
            b = _dget(st, pk[0])
            if b == NULL or b != PyList_GET_ITEM(pk[3], r):
                return False
        return True

    cdef object _grad_owner(self, Py_ssize_t j):
        """The tensor whose .grad row j//nbuf steps with: the parameter, or
        the 16-bit parameter of a float32 master."""
        if self.aobjs is not None and self.akeys[0] == "":
            return <object>PyList_GET_ITEM(self.aobjs, j)
        return <object>PyList_GET_ITEM(self.objs, j)

    cdef bint _row_shim(self, Py_ssize_t r, Spans spans) except -1:
        """check_torch's row r, every tensor read in C through the shim: True
        when it holds (the gradient's address then filled in); False when it
        does not or cannot be told this way (then _row_torch decides)."""
        cdef Py_ssize_t k, j = r * self.nbuf, nd, e = self.tsho[r]
        cdef object st, g
        cdef void *h
        cdef void *d
        cdef int64_t n, es
        cdef int64_t *sz
        cdef int64_t *gs
        cdef int64_t tst[ADAPTOPT_MAX_NDIM]
        cdef uint64_t lo, hi, base
        if not _shim.on or not _tensor_holds(<object>PyList_GET_ITEM(self.objs, j),
                                             self.ptr[j], self.nb[j], self.dcode):
            return False
        st = <object>PyList_GET_ITEM(self.states, r)
        if not self._state_held(r, st, True):
            return False
        g = self._grad_owner(j).grad
        h = NULL if g is None else _handle(g)
        if h == NULL:
            return False
        n = _dense_cpu(h, self.gcode)
        nd = self.tsh[e]
        if (n < 0 or self.gcode < 0 or _shim.dim(h, &es) or es != nd or _shim.sizes(h, &sz)
                or _shim.strides(h, &gs) or _shim.data_ptr(h, &d)):
            return False
        for k in range(nd):
            if sz[k] != self.tsh[e + 1 + k]:
                return False
        if g.is_neg():
            return False
        lo = <uint64_t>d
        if self.gd[self.doff[r]] == 0 or memcmp(gs, self.tsh + e + 1 + nd,
                                                nd * sizeof(int64_t)) == 0:
            hi = lo + <uint64_t>n
            self.gp[r] = 0
            base = lo
        else:
            es = _shim.es[self.gcode]
            for k in range(nd):
                tst[k] = gs[k] * es
            base = self._strided(r, lo, tst, sz, nd, es, &lo, &hi)
        if (not _in_storage(h, <uint64_t>d, lo, hi, _shim.es[self.gcode])
                or _spans_hit(spans.s, spans.e, spans.m, lo, hi)):
            return False
        self.ptr[j + 1] = base
        _shim.reads += 1
        return True

    cdef bint _row_torch(self, Py_ssize_t r, Spans spans, strided) except -1:
        """check_torch's row r, read through torch's Python attributes."""
        cdef Py_ssize_t k, j = r * self.nbuf
        cdef object p, g, st, gs, dt = self.dtype_obj
        cdef uint64_t lo, hi, base
        cdef int64_t tst[ADAPTOPT_MAX_NDIM]
        cdef int64_t tdim[ADAPTOPT_MAX_NDIM]
        cdef int64_t es
        cdef Py_ssize_t nd
        p = <object>PyList_GET_ITEM(self.objs, j)
        if (<uint64_t>p.data_ptr() != self.ptr[j] or p.dtype is not dt
                or <uint64_t>p.nbytes != self.nb[j] or not _in_storage_py(p, self.ptr[j],
                                                                          self.nb[j])):
            return False
        st = <object>PyList_GET_ITEM(self.states, r)
        if not self._state_held(r, st, False):
            return False
        g = self._grad_owner(j).grad
        # strided, on the CPU, p's dtype and shape, not a lazily negated view;
        # with p's strides it is dense in p's order, else it is gathered
        if (g is None or g.layout is not strided or not g.is_cpu
                or g.dtype is not self.gdtype_obj or g.shape != <object>PyList_GET_ITEM(self.shapes, r) or g.is_neg()):
            return False
        lo = <uint64_t>g.data_ptr()
        gs = g.stride()
        if gs == <object>PyList_GET_ITEM(self.pstrides, r) or self.gd[self.doff[r]] == 0:
            hi = lo + <uint64_t>g.nbytes
            self.gp[r] = 0
            base = lo
        else:
            nd = len(gs)
            if nd > ADAPTOPT_MAX_NDIM:
                return False
            es = g.element_size()
            for k in range(nd):
                tst[k] = <int64_t>gs[k] * es
                tdim[k] = <int64_t>g.shape[k]
            base = self._strided(r, lo, tst, tdim, nd, es, &lo, &hi)
        if (not _in_storage_py(g, lo, hi - lo)
                or _spans_hit(spans.s, spans.e, spans.m, lo, hi)):
            return False
        self.ptr[j + 1] = base
        return True


cdef bint _in_storage_py(object t, uint64_t lo, uint64_t nbytes) except -1:
    """[lo, lo + nbytes) lies inside torch tensor t's storage (read through Python)."""
    if nbytes == 0:
        return True
    s = t.untyped_storage()
    cdef uint64_t start = <uint64_t>s.data_ptr()
    return lo >= start and lo + nbytes <= start + <uint64_t>s.nbytes()


cdef inline uint64_t _lowest(cnp.ndarray a) noexcept:
    """The lowest address of a's elements (negative strides: below its data)."""
    cdef int64_t x = <int64_t>cnp.PyArray_DATA(a), d
    cdef int k
    if cnp.PyArray_SIZE(a) == 0:
        return <uint64_t>x
    for k in range(cnp.PyArray_NDIM(a)):
        d = <int64_t>cnp.PyArray_STRIDES(a)[k] * (<int64_t>cnp.PyArray_DIMS(a)[k] - 1)
        if d < 0:
            x += d
    return <uint64_t>x


cdef inline uint64_t _address_of(object a, int kind) except? 0:
    """The address the kernels start from: a torch tensor's data pointer, an
    array's lowest address."""
    if kind == _TORCH:
        return <uint64_t>a.data_ptr()
    return _lowest(<cnp.ndarray>a)


# A counter pack: a float32 or float64 array, and the positions in it of one
# group's rows (None: all of it); torch's per-parameter step counters.
cdef struct _Pack:
    char *data
    const cnp.intp_t *ix
    Py_ssize_t n
    bint f32


cdef inline _Pack _pack(cnp.ndarray arr, object pos) noexcept:
    cdef _Pack pk
    pk.data = <char *>cnp.PyArray_DATA(arr)
    pk.f32 = cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32
    if pos is None:
        pk.n, pk.ix = cnp.PyArray_SIZE(arr), NULL
    else:
        pk.n = cnp.PyArray_SIZE(<cnp.ndarray>pos)
        pk.ix = <const cnp.intp_t *>cnp.PyArray_DATA(<cnp.ndarray>pos)
    return pk


cdef inline double _pack_get(const _Pack *pk, Py_ssize_t i) noexcept:
    cdef Py_ssize_t k = i if pk.ix == NULL else pk.ix[i]
    return (<float *>pk.data)[k] if pk.f32 else (<double *>pk.data)[k]


cdef bint _pack_holds(cnp.ndarray arr, object pos, double want):
    """arr[pos] == want everywhere (pos None: all of arr)."""
    cdef _Pack pk = _pack(arr, pos)
    cdef Py_ssize_t i
    for i in range(pk.n):
        if _pack_get(&pk, i) != want:
            return False
    return True


cdef void _pack_write(cnp.ndarray arr, object pos, double value):
    cdef _Pack pk = _pack(arr, pos)
    cdef Py_ssize_t i, k
    for i in range(pk.n):
        k = i if pk.ix == NULL else pk.ix[i]
        if pk.f32:
            (<float *>pk.data)[k] = <float>value
        else:
            (<double *>pk.data)[k] = value


cdef int _call(Batch b, int n_threads, adaptopt_staging *st) noexcept nogil:
    """One batch's kernel: plain, strided (gradients gathered), or staged when
    st is given."""
    if st == NULL and b.nstrided:
        return adaptopt_step_strided(b.algo, b.dtype, b.n, b.nbuf, <void **>b.ptr,
                                     <const int64_t **>b.gp, b.off, b.sc, b.nscal, b.flags,
                                     n_threads)
    if st == NULL:
        return adaptopt_step(b.algo, b.dtype, b.n, b.nbuf, <void **>b.ptr, b.off, b.sc,
                             b.nscal, b.flags, n_threads)
    return adaptopt_step_staged(b.algo, st, b.n, b.nbuf, <void **>b.ptr, <void **>b.aptr, b.off,
                                b.sc, b.nscal, b.flags, n_threads)


def run(list batches, int n_threads, scale=None):
    """Every kernel call of a step, then every counter: one call, no Python
    code in between.  scale: None, or (grad_div, grad_mul, writeback): each
    gradient g is used as g / grad_div (0: not divided) * grad_mul, computed
    on the fly in the kernel's pass (the staging layer; writeback: the scaled
    g is stored back into the gradient, torch's fused AMP).  RuntimeError
    only if C rejects its arguments, which the engine's checks rule out."""
    cdef Batch b
    cdef Py_ssize_t r
    cdef int rc
    cdef tuple c, pk
    cdef object t
    cdef adaptopt_staging st
    cdef adaptopt_staging *stp
    for b in batches:
        stp = NULL
        if b.staging is not None:
            b.staging.st.step = b.t
            st = b.staging.st
            stp = &st
        elif scale is not None:
            memset(&st, 0, sizeof(st))
            st.compute, st.grad_mul = b.dtype, 1.0
            stp = &st
        if scale is not None:
            st.grad_div, st.grad_mul, st.grad_writeback = scale[0], scale[1], bool(scale[2])
        if stp != NULL:
            st.gdesc = <const int64_t **>b.gp if b.nstrided else NULL
        if b.off[b.n] < 16384:  # a few microseconds at most: keep the GIL
            rc = _call(b, n_threads, stp)
        else:
            with nogil:
                rc = _call(b, n_threads, stp)
        if rc != ADAPTOPT_OK:
            raise RuntimeError(f"adaptopt kernel {b.algo} rejected its arguments (code {rc})")
    for b in batches:
        if b.kind == _NUMPY and b.has_step:
            t = b.t
            for r in range(b.n):
                PyDict_SetItem(<object>PyList_GET_ITEM(b.states, r), "step", t)
        if b.step_pack is not None:
            _pack_write(b.step_pack[0], b.step_pack[1], <double>b.t)
        for c in b.counters:
            for r in range(b.n):
                PyDict_SetItem(<object>PyList_GET_ITEM(b.states, r), c[0], c[2])
        for pk in b.packs:
            _pack_write(pk[1], pk[2], pk[5])
        b.t += 1


def check_numpy_all(list batches, grads, Spans spans, dict state_map):
    """Batch.check_numpy over a plan: True when every batch passes."""
    cdef Batch b
    for b in batches:
        if b.check_numpy(grads, spans, state_map) >= 0:
            return False
    return True


def check_torch_all(list batches, Spans spans, strided):
    """Batch.check_torch over a plan: True when every batch passes."""
    cdef Batch b
    for b in batches:
        if b.check_torch(spans, strided) >= 0:
            return False
    return True


def fast_check(plan, groups, grads, dict state_map):
    """A plan of the NumPy front end is good for this step: the param groups
    hold the same dicts, lists and parameters (plan.layout), each group the
    same hyperparameter objects (plan.snaps, a mutable value also the same
    contents), and every batch passes check_numpy.  Its counters are not
    checked by this function's caller beyond what check_numpy does."""
    return (_layout_holds(plan.layout, groups) and _snaps_hold(plan.snaps)
            and check_numpy_all(plan.batches, grads, plan.spans.compiled, state_map))


def fast_check_torch(plan, groups, strided):
    """fast_check for the torch front end (the gradients are p.grad)."""
    return (_layout_holds(plan.layout, groups) and _snaps_hold(plan.snaps)
            and check_torch_all(plan.batches, plan.spans.compiled, strided))


def same_layout(tuple layout, groups):
    """The param groups hold the same dicts, lists and parameters as when
    layout = _engine.layout_of(groups) was taken."""
    return _layout_holds(layout, groups)


cdef bint _layout_holds(tuple layout, groups) except -1:
    cdef list gdicts = layout[1], plists = layout[2], items = layout[3]
    cdef Py_ssize_t i
    cdef PyObject *v
    if groups is not layout[0] or type(groups) is not list or not same_items(groups, gdicts):
        return False
    for i in range(PyList_GET_SIZE(gdicts)):
        v = _dget(<object>PyList_GET_ITEM(gdicts, i), "params")
        if v == NULL or v != PyList_GET_ITEM(plists, i) or type(<object>v) is not list:
            return False
        if not same_items(<list>v, <list>PyList_GET_ITEM(items, i)):
            return False
    return True


cdef bint _snaps_hold(list snaps) except -1:
    for snap in snaps:
        group = snap.group
        if len(group) != snap.size or not same_values(group, snap.keys, snap.values):
            return False
        if snap.frozen and not snap.holds(group):
            return False
    return True


def fast_step(plan, groups, grads, dict state_map, int n_threads, scale=None):
    """The NumPy front end's whole common step in one call: 1 when it ran;
    0 when the plan does not hold for these arguments (nothing done); 2 when
    it holds but its scalars need Python (a schedule, scalar state): the
    caller then runs plan.step."""
    cdef Batch b
    cdef Py_ssize_t i, n = len(grads), given = 0
    for i in range(n):
        given += grads[i] is not None
    if given != plan.rows or not fast_check(plan, groups, grads, state_map):
        return 0
    if not plan.common:
        return 2
    plan_step(plan, n_threads, scale)
    return 1


def fast_step_torch(plan, groups, list params, strided, int n_threads, scale=None):
    """fast_step for the torch front end: params are all the group's
    parameters (the gradients are their .grad)."""
    cdef Py_ssize_t i, given = 0, n = PyList_GET_SIZE(params)
    if plan.rows != n:  # else every parameter is a row, whose .grad the check reads
        for i in range(n):
            given += (<object>PyList_GET_ITEM(params, i)).grad is not None
        if given != plan.rows:
            return 0
    if not fast_check_torch(plan, groups, strided):
        return 0
    if not plan.common:
        return 2
    plan_step(plan, n_threads, scale)
    return 1


def plan_step(plan, int n_threads, scale=None):
    """Plan.step for the common case (plan.common: no lr schedule, no scalar
    state, no pending first-step flags): each batch's scalars from its
    group's snapshot, then every kernel and counter."""
    cdef Batch b
    cdef Py_ssize_t i, k
    cdef list batches = plan.batches, snaps = plan.snaps_of
    cdef tuple positions, values
    for i in range(PyList_GET_SIZE(batches)):
        b = <Batch>PyList_GET_ITEM(batches, i)
        snap = <object>PyList_GET_ITEM(snaps, i)
        fixed = snap.fixed
        positions = snap.positions
        values = snap.spec.per_step(snap.hyper, b.t, None)
        for k in range(len(fixed)):
            v = fixed[k]
            if v is not None:
                b.sc[k] = v
        for k in range(len(positions)):
            b.sc[<Py_ssize_t>positions[k]] = values[k]
        b.nscal = len(fixed)
        b.flags = snap.flags
    run(batches, n_threads, scale)


def none_mask(grads):
    """bytes, 1 where grads[i] is None: which parameters a step updates."""
    cdef Py_ssize_t i, n = len(grads)
    cdef bytearray out = bytearray(n)
    for i in range(n):
        out[i] = grads[i] is None
    return bytes(out)


def same_values(dict group, tuple keys, tuple values):
    """group[keys[i]] is values[i] for every i."""
    cdef Py_ssize_t i
    cdef PyObject *v
    for i in range(len(keys)):
        v = _dget(group, keys[i])
        if v == NULL or <object>v is not values[i]:
            return False
    return True


def grad_mask(list params):
    """bytes, 1 where params[i].grad is None (torch: which parameters a step updates)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(params)
    cdef bytearray out = bytearray(n)
    for i in range(n):
        out[i] = (<object>PyList_GET_ITEM(params, i)).grad is None
    return bytes(out)


def grad_keys(list params):
    """(grad_mask(params), ids of the parameters with a .grad, in order): one pass."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(params)
    cdef bytearray out = bytearray(n)
    cdef list keys = []
    cdef object p
    for i in range(n):
        p = <object>PyList_GET_ITEM(params, i)
        if p.grad is None:
            out[i] = 1
        else:
            keys.append(id(p))
    return bytes(out), keys


def pack_value(cnp.ndarray arr, pos):
    """The value arr[pos] holds everywhere (pos None: all of arr), as a
    float, if it is one finite value; else None (0.0 when empty)."""
    cdef _Pack pk = _pack(arr, pos)
    cdef double first = _pack_get(&pk, 0) if pk.n else 0.0
    if not (first - first == 0):  # NaN or inf
        return None
    return first if _pack_holds(arr, pos, first) else None


def same_items(list a, list b):
    """a and b hold the same objects in the same order."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(a)
    if n != PyList_GET_SIZE(b):
        return False
    for i in range(n):
        if PyList_GET_ITEM(a, i) != PyList_GET_ITEM(b, i):
            return False
    return True


def fill_pointers(list arrays, uint64_t[::1] out, Py_ssize_t start, Py_ssize_t stride):
    """out[start + k*stride] = data address of arrays[k] (0 for None)."""
    cdef Py_ssize_t k
    cdef object a
    for k in range(len(arrays)):
        a = arrays[k]
        out[start + k * stride] = 0 if a is None else <uint64_t>cnp.PyArray_DATA(a)


def memory_order(shape, strides):
    """A dense array's memory order: ([(dim, size)...] outermost first, the
    dimensions of size > 1 by decreasing |stride|, dim ~d where the stride
    is negative), and its lowest address minus its data pointer (bytes).
    [(0, 1)] when no dimension has size > 1; [] for an empty array."""
    if 0 in shape:
        return [], 0
    dims = sorted((d for d in range(len(shape)) if shape[d] > 1),
                  key=lambda d: -abs(strides[d]))
    low = sum(min(0, strides[d] * (shape[d] - 1)) for d in dims)
    order = [(d if strides[d] >= 0 else ~d, shape[d]) for d in dims]
    return (order or [(0, 1)]), low


def is_dense(shape, strides, itemsize):
    """The elements fill [lowest, lowest + size*itemsize) once each: dense
    and non-overlapping, in any order of dimensions (byte strides)."""
    if 0 in shape:
        return True
    expect = itemsize
    for d in sorted((d for d in range(len(shape)) if shape[d] > 1),
                    key=lambda d: abs(strides[d])):
        if abs(strides[d]) != expect:
            return False
        expect *= shape[d]
    return True


def row_param(Batch b, Py_ssize_t r):
    """Row r's parameter (with master weights: the 16-bit one, not the master
    copy its kernel buffer 0 is)."""
    if b.akeys is not None and b.akeys[0] == "":
        return b.aobjs[r * b.nbuf]
    return b.objs[r * b.nbuf]


def set_thread_guard(bint on):
    """Turn the contention guard (csrc/dispatch.c) on or off; the previous setting."""
    return bool(adaptopt_set_thread_guard(on))


def thread_guard_trips():
    """How many parallel regions the contention guard found slower than serial."""
    return adaptopt_thread_guard_trips()


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


cdef extern from "adaptopt.h" nogil:
    ctypedef struct adaptopt_rows_catchup:
        double base[8]
        int drift
        double drift_lr, drift_mu
    int adaptopt_rows_step(int algo, int dtype, size_t n_rows, size_t cols, size_t nbuf,
                           void **base, size_t n_grads, const int64_t *rows,
                           const int64_t *order, const int64_t *starts, size_t n_groups,
                           int64_t *row_step, long long t,
                           const adaptopt_rows_catchup *catchup, const double *scal,
                           size_t nscal, int flags, int n_threads)


cdef inline int64_t *_i64(object a, Py_ssize_t min_size, str name) except? NULL:
    if a is None:
        return NULL
    return <int64_t *>_data(<cnp.ndarray?>a, cnp.NPY_INT64, min_size, name)


def rows_step(int algo, int dtype, size_t n_rows, size_t cols, cnp.ndarray ptr, size_t n_grads,
              cnp.ndarray rows, order, starts, row_step, long long t, catchup, scal, int flags,
              int n_threads):
    """One row-wise step of a 2-D table (csrc/adaptopt.h, adaptopt_rows_step).

    ptr: uint64 buffer addresses (nbuf); rows, order, starts, row_step: int64
    arrays (order/starts/row_step may be None); catchup: None or (bases
    (nbuf floats), drift buffer or -1, drift_lr, drift_mu); returns the C
    error code."""
    cdef double sc[ADAPTOPT_MAX_NSCAL]
    cdef adaptopt_rows_catchup cu
    cdef const adaptopt_rows_catchup *cup = NULL
    cdef Py_ssize_t k, nscal = len(scal), nbuf = ptr.size
    cdef int rc
    if nscal > ADAPTOPT_MAX_NSCAL or nbuf > ADAPTOPT_MAX_NBUF:
        raise ValueError(f"at most {ADAPTOPT_MAX_NSCAL} scalars and {ADAPTOPT_MAX_NBUF} buffers")
    for k in range(nscal):
        sc[k] = scal[k]
    cdef size_t n_groups = rows.size
    cdef void **p = <void **>_data(ptr, cnp.NPY_UINT64, nbuf, "ptr")
    cdef int64_t *r = _i64(rows, 0, "rows")
    cdef int64_t *o = _i64(order, n_grads, "order")
    cdef int64_t *s = _i64(starts, n_groups + 1, "starts")
    cdef int64_t *rs = _i64(row_step, n_rows, "row_step")
    if catchup is not None:
        bases, drift, lr, mu = catchup
        if len(bases) != nbuf:
            raise ValueError("catchup needs one base per buffer")
        for k in range(nbuf):
            cu.base[k] = bases[k]
        cu.drift, cu.drift_lr, cu.drift_mu = drift, lr, mu
        cup = &cu
    with nogil:
        rc = adaptopt_rows_step(algo, dtype, n_rows, cols, nbuf, p, n_grads, r, o, s, n_groups,
                                rs, t, cup, sc, nscal, flags, n_threads)
    return rc


cdef extern from "adaptopt.h" nogil:
    int adaptopt_q8_quantize(const float *x, size_t n, unsigned char *codes, float *absmax,
                             int is_signed, int stochastic, unsigned int key, int n_threads)
    int adaptopt_q8_dequantize(const unsigned char *codes, const float *absmax, size_t n,
                               float *x, int is_signed, int n_threads)


def q8_quantize(const float[::1] x, unsigned char[::1] codes, float[::1] absmax,
                bint is_signed, bint stochastic, unsigned int key, int n_threads):
    """8-bit state: x -> codes, absmax (csrc/adaptopt.h); returns the C error code."""
    if codes.shape[0] != x.shape[0] or absmax.shape[0] != (x.shape[0] + 255) // 256:
        raise ValueError("q8_quantize: codes must have x's size, absmax one value per 256")
    cdef int rc
    with nogil:
        rc = adaptopt_q8_quantize(&x[0] if x.shape[0] else NULL, x.shape[0],
                                  &codes[0] if x.shape[0] else NULL,
                                  &absmax[0] if x.shape[0] else NULL,
                                  is_signed, stochastic, key, n_threads)
    return rc


def q8_dequantize(const unsigned char[::1] codes, const float[::1] absmax, float[::1] x,
                  bint is_signed, int n_threads):
    """8-bit state: codes, absmax -> x (csrc/adaptopt.h); returns the C error code."""
    if codes.shape[0] != x.shape[0] or absmax.shape[0] != (x.shape[0] + 255) // 256:
        raise ValueError("q8_dequantize: x must have codes' size, absmax one value per 256")
    cdef int rc
    with nogil:
        rc = adaptopt_q8_dequantize(&codes[0] if x.shape[0] else NULL,
                                    &absmax[0] if x.shape[0] else NULL, x.shape[0],
                                    &x[0] if x.shape[0] else NULL, is_signed, n_threads)
    return rc


cdef extern from "adaptopt.h" nogil:
    int adaptopt_grad_sumsq(size_t n_arrays, const int *types, const void *const *ptr,
                            const size_t *offsets, int n_threads, double *sumsq, int *nonfinite)
    enum:
        ADAPTOPT_GRADNORM_BLOCK, ADAPTOPT_GRADNORM_THRESHOLD

GRADNORM_BLOCK, GRADNORM_THRESHOLD = ADAPTOPT_GRADNORM_BLOCK, ADAPTOPT_GRADNORM_THRESHOLD


def grad_sumsq(cnp.ndarray ptr, cnp.ndarray types, cnp.ndarray offsets, int n_threads):
    """The global gradient norm's reduction (csrc/adaptopt.h): (code, sum of
    squares in float64, 1 if any element is inf or NaN).  ptr: uint64
    addresses, types: intc storage codes (STORE_F32 ... STORE_F16), one each
    per array; offsets: uintp, n_arrays + 1."""
    cdef size_t n_arrays = offsets.size - 1 if offsets.size else 0
    cdef size_t *off = <size_t *>_data(offsets, cnp.NPY_UINTP, 1, "offsets")
    cdef void **p = <void **>_data(ptr, cnp.NPY_UINT64, n_arrays, "ptr")
    cdef int *dt = <int *>_data(types, cnp.NPY_INT, n_arrays, "types")
    cdef double s = 0
    cdef int bad = 0, rc
    if n_arrays == 0:
        return adaptopt_grad_sumsq(0, NULL, NULL, off, n_threads, &s, &bad), s, bad
    if off[n_arrays] < 65536:
        rc = adaptopt_grad_sumsq(n_arrays, dt, <const void *const *>p, off, n_threads, &s, &bad)
    else:
        with nogil:
            rc = adaptopt_grad_sumsq(n_arrays, dt, <const void *const *>p, off, n_threads, &s,
                                     &bad)
    return rc, s, bad
