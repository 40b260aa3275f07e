"""Mixed precision: which types a step reads and writes, for both front ends.

Parameters may be float32, float64, bfloat16 or float16; the arithmetic is
float64 for float64 parameters and float32 otherwise.  Per param group:

- ``state_dtype``: the type of the state buffers: None (the parameter's, as
  torch.optim keeps it), ``"float32"``, ``"bfloat16"``, ``"float16"`` or
  ``"int8"``: 8-bit block-quantised state (``adaptopt._quant``: uint8 codes in
  ``state[name]``, one float32 absmax per 256 elements in
  ``state[name + "_absmax"]``), for C-contiguous parameters of at least
  4,096 elements (smaller ones and other layouts keep float32 state).
- ``master_weights``: a 16-bit parameter gets a float32 copy in its state
  (``state["master_weight"]``): the step updates the copy and writes the
  rounded 16-bit parameter in the same pass.
- ``stochastic_rounding``: 16-bit values the step writes (parameter, master
  copy's 16-bit image, 16-bit state) are rounded stochastically from
  counter-based bits of (``seed``, step, parameter index, buffer, element;
  the element's position in the parameter's memory): deterministic, the same
  for every thread count and SIMD path.
- ``seed``: the stochastic rounding's seed.
- ``grad_cast``: ``"no"`` (gradients have the parameter's dtype, or are
  bfloat16/float16 into float32 parameters) or ``"same_kind"`` (also float32
  gradients into float64 parameters and float64 into float32, converted in
  the pass, as NumPy's casting rule names it).

:func:`types` decides a row's types (or raises naming the argument);
:func:`reference_step` is the NumPy twin of the staged kernel call.
"""

from typing import NamedTuple

import numpy as np

from . import _checks, _quant, _rounding

__all__ = ["MEANING", "Types", "types", "reference_step", "MASTER", "numpy_dtype",
           "name_of", "INT8", "absmax_key", "is_signed"]

MASTER = "master_weight"
INT8 = "int8"
# State buffers that are never negative: the unsigned map; every other buffer the signed one.
UNSIGNED_BUFFERS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg", "exp_inf",
                              "acc_delta", "step_size"})


def absmax_key(name):
    """The state key of an 8-bit buffer's absmax array."""
    return name + "_absmax"


def is_signed(name):
    """An 8-bit buffer's map: signed unless the buffer is never negative."""
    return name not in UNSIGNED_BUFFERS
FLOATS16 = ("bfloat16", "float16")
NAMES = ("float32", "float64") + FLOATS16


def _state_dtype(name, value):
    if value is None:
        return None
    v = name_of(value)
    if v not in ("float32",) + FLOATS16 + (INT8,):
        raise ValueError(f"{name} must be None (the parameter's dtype), 'float32', 'bfloat16', "
                         f"'float16' or 'int8', got {value!r}")
    return v


def _grad_cast(name, value):
    if value not in ("no", "same_kind"):
        raise ValueError(f"{name} must be 'no' or 'same_kind', got {value!r}")
    return value


def _seed(name, value):
    v = _checks.whole(name, value)
    if v >= 1 << 64:
        raise ValueError(f"{name} must be < 2**64, got {value!r}")
    return v


def _hyper():
    from ._spec import Hyper
    return {"state_dtype": Hyper(None, _state_dtype), "master_weights": Hyper(False, _checks.flag),
            "stochastic_rounding": Hyper(False, _checks.flag), "seed": Hyper(0, _seed),
            "grad_cast": Hyper("no", _grad_cast)}


MEANING = {
    "state_dtype": "Type of the state buffers: None (the parameter's dtype, as torch.optim), "
                   "``'float32'``, ``'bfloat16'``, ``'float16'`` or ``'int8'`` (8-bit "
                   "block-wise quantised, for C-contiguous parameters of >= 4,096 "
                   "elements; others keep float32 state).",
    "master_weights": "Keep a float32 master copy of each 16-bit parameter in the state "
                      "(``state['master_weight']``); the step updates it and writes the "
                      "rounded parameter in the same pass.",
    "stochastic_rounding": "Round the 16-bit values a step writes stochastically "
                           "(counter-based bits: deterministic, independent of threads and "
                           "SIMD path) instead of to nearest.",
    "seed": "Seed of the stochastic rounding.",
    "grad_cast": "``'no'``: a gradient has its parameter's dtype (or is bfloat16/float16 for a "
                 "float32 parameter); ``'same_kind'``: float32 gradients of float64 "
                 "parameters and float64 of float32 are also accepted, converted in the pass.",
}


def name_of(dtype):
    """'float32', 'bfloat16', ... for a NumPy dtype, a torch dtype or a string."""
    s = str(dtype)
    return s[6:] if s.startswith("torch.") else str(np.dtype(dtype)) if not isinstance(
        dtype, str) else s


def numpy_dtype(name):
    """The NumPy dtype of a type name (bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    if name == INT8:  # the codes
        return np.dtype(np.uint8)
    return np.dtype(name)


class Types(NamedTuple):
    """One row's types: names, the C compute code and storage codes."""

    param: str
    grad: str
    state: str          # the state buffers' type
    compute: str        # float32 or float64
    master: bool        # state[MASTER] is the float32 master copy
    staged: bool        # not the plain kernel call: the staging layer runs
    stochastic: bool    # stochastic rounding of 16-bit stores


def types(pname, gname, h, where="grads[i]", size=None, pwhere="the parameter",
          c_order=True):
    """The types of a step of a parameter of type pname with a gradient of
    type gname (None: not known yet) under the group's hyperparameters h.
    TypeError naming where (and pwhere, the parameter) when the gradient's
    type is not accepted.  size: the parameter's elements; c_order: whether
    it is C-contiguous (int8 state: below MIN_SIZE elements, or in another
    layout, the state is float32)."""
    compute = "float64" if pname == "float64" else "float32"
    state = h.get("state_dtype") or pname
    if state == INT8 and ((size is not None and size < _quant.MIN_SIZE) or not c_order):
        state = "float32"
    master = bool(h.get("master_weights")) and pname in FLOATS16
    if gname is not None and gname != pname:
        ok = (pname == "float32" and gname in FLOATS16) or (
            h.get("grad_cast") == "same_kind" and {pname, gname} == {"float32", "float64"})
        if not ok:
            hint = (" (pass grad_cast='same_kind' to convert it in the step)"
                    if {pname, gname} == {"float32", "float64"} else "")
            raise TypeError(f"{where} has dtype {gname}, {pwhere} has {pname}: no silent "
                            f"cast is made{hint}")
    if state in FLOATS16 + (INT8,) and compute == "float64":
        raise TypeError(f"state_dtype={state!r} needs float32 arithmetic; the parameter is "
                        "float64")
    stochastic = bool(h.get("stochastic_rounding")) and (pname in FLOATS16 or state in FLOATS16
                                                         or state == INT8)
    staged = (pname != compute or (gname is not None and gname != pname) or state != compute
              or master)
    return Types(pname, gname or pname, state, compute, master, staged, stochastic)


def storage_codes(ty, nbuf, names=None):
    """(compute code, storage per kernel buffer, stochastic per buffer, mirror
    code); names: the kernel's state buffers (int8 state: each one's map)."""
    from . import _kernels as K
    code = {"float32": K.STORE_F32, "float64": K.STORE_F64, "bfloat16": K.STORE_BF16,
            "float16": K.STORE_F16}

    def store(name):
        return K.STORE_COMPUTE if name == ty.compute else code[name]

    p = K.STORE_COMPUTE if ty.master else store(ty.param)
    if ty.state == INT8:
        states = tuple(K.STORE_Q8_SIGNED if is_signed(n) else K.STORE_Q8_UNSIGNED
                       for n in names)
    else:
        states = (store(ty.state),) * (nbuf - 2)
    storage = (p, store(ty.grad)) + states
    sr16 = [ty.stochastic and n in FLOATS16 + (INT8,) for n in (ty.param, ty.state)]
    stochastic = (sr16[0] and not ty.master, False) + (sr16[1],) * (nbuf - 2)
    mirror = code[ty.param] if ty.master else 0
    return (0 if ty.compute == "float32" else 1), storage, stochastic, mirror


# --- int8 state in and out of state dicts ------------------------------------------
def dequantized(st, buffers):
    """A state dict entry with its low-precision buffers as float32 arrays
    (int8 codes decoded with their absmax, which is dropped; bfloat16/float16 widened)."""
    out = {}
    for k, v in st.items():
        if k in buffers and isinstance(v, np.ndarray):
            if v.dtype == np.uint8 and absmax_key(k) in st:
                v = _quant.dequantize(v, st[absmax_key(k)], is_signed(k))
            elif name_of(v.dtype) in FLOATS16:
                v = v.astype(np.float32)
        elif k.endswith("_absmax") and k[:-7] in buffers:
            continue
        out[k] = v
    return out


def converted(st, buffers, ty, p, where):
    """st with each buffer in the group's state type: float buffers quantised
    when it is int8 (bitwise what a step stores: nearest rounding), int8
    buffers decoded when it is not; anything else unchanged (checked later)."""
    out = dict(st)
    for k in buffers:
        v = st.get(k)
        if not isinstance(v, np.ndarray) or v.shape != p.shape:
            continue
        if ty.state == INT8 and (v.dtype.kind == "f" or name_of(v.dtype) == "bfloat16"):
            out[k], out[absmax_key(k)] = _quant.quantize(v.astype(np.float32), is_signed(k))
        elif ty.state != INT8 and v.dtype == np.uint8 and absmax_key(k) in st:
            a = st[absmax_key(k)]
            if (not isinstance(a, np.ndarray) or a.dtype != np.float32
                    or a.shape != (_quant.n_blocks(p.size),)):
                raise ValueError(f"{where}[{absmax_key(k)!r}] must be a float32 array of "
                                 f"shape ({_quant.n_blocks(p.size)},), got {a!r:.60}")
            vals = _quant.dequantize(v, a, is_signed(k))
            out[k] = _store_new(vals, ty.state)
            del out[absmax_key(k)]
    return out


def _store_new(values, name):
    """A new array of type name holding values (nearest rounding)."""
    out = np.empty(values.shape, numpy_dtype(name))
    _store(values, out, name, False, 0)
    return out


# --- the NumPy twin of a staged call -------------------------------------------------
def _load(a, name, absmax=None, signed=True):
    """float32 (or float64) values of an array stored as name."""
    if name == INT8:
        return _quant.dequantize(a, absmax, signed)
    if name == "bfloat16":
        return _rounding.bf16_to_f32(a.view(np.uint16)).reshape(a.shape)
    if name == "float16":
        return _rounding.f16_to_f32(a.view(np.uint16)).reshape(a.shape)
    return a


def _memory_order(a):
    """(flips, perm): np.flip(a, flips).transpose(perm) is C-contiguous (a
    dense): a's elements in the order they lie in memory."""
    flips = tuple(d for d in range(a.ndim) if a.strides[d] < 0 and a.shape[d] > 1)
    perm = sorted(range(a.ndim), key=lambda d: (a.shape[d] > 1) * -abs(a.strides[d]))
    return flips, perm


def _to_memory(x, a):
    """x (of a's shape) as a 1-D array in a's memory order."""
    flips, perm = _memory_order(a)
    return np.flip(x, flips).transpose(perm).reshape(-1)


def _from_memory(flat, a):
    """The inverse of _to_memory: an array of a's shape."""
    flips, perm = _memory_order(a)
    y = flat.reshape([a.shape[d] for d in perm]).transpose(np.argsort(perm))
    return np.flip(y, flips)


def _store(values, out, name, stochastic, key, absmax=None, signed=True, order=None):
    """Write values (the compute type) into out, stored as name (int8: and
    absmax).  Stochastic rounding: element i of order's memory order (the
    parameter's, the order the kernels run in; default out's) gets bits i."""
    if name == INT8:  # C-contiguous parameters only (types)
        x = np.asarray(values, dtype=np.float32)
        bits = _rounding.sr_bits(key, x.size) if stochastic else None
        out[...], absmax[...] = _quant.quantize(x, signed, bits)
    elif name in FLOATS16:
        order = out if order is None else order
        x = _to_memory(np.asarray(values, dtype=np.float32), order)
        if stochastic:
            bits = _rounding.sr_bits(key, x.size)
            fn = _rounding.f32_to_bf16_sr if name == "bfloat16" else _rounding.f32_to_f16_sr
            h = fn(x, bits)
        else:
            h = (_rounding.f32_to_bf16 if name == "bfloat16" else _rounding.f32_to_f16)(x)
        out.view(np.uint16)[...] = _from_memory(h, order)
    else:
        out[...] = values


def reference_step(spec, p, g, st, t, h, index, grad_div=0.0, grad_mul=1.0):
    """One reference step of parameter index with the types :func:`types`
    gives: the values converted to the compute type, the algorithm's
    reference update, the results rounded back (what the staging layer does,
    csrc/staging.c.inc).  st holds the stored state (and the master copy)."""
    ty = types(name_of(p.dtype), name_of(g.dtype), h, size=p.size, c_order=p.flags.c_contiguous)
    cdt = np.dtype(ty.compute)
    q8 = ty.state == INT8
    work = {}
    for k, v in st.items():
        if q8 and k.endswith("_absmax"):
            continue
        if isinstance(v, np.ndarray) and k != MASTER:
            work[k] = np.array(_load(v, ty.state, st.get(absmax_key(k)), is_signed(k)),
                               dtype=cdt)
        else:
            work[k] = v
    pw = (np.array(st[MASTER], dtype=cdt) if ty.master
          else np.array(_load(p, ty.param), dtype=cdt))
    gw = np.array(_load(g, ty.grad), dtype=cdt)
    if grad_div:
        gw = gw / cdt.type(grad_div)
    if grad_mul != 1:
        gw = gw * cdt.type(grad_mul)
    spec.update(pw, gw, work, t, h)
    seed = h.get("seed", 0)
    names = spec.kernel_buffers
    for k, v in work.items():
        if k in names and isinstance(v, np.ndarray):
            if k not in st:
                st[k] = np.empty(p.shape, numpy_dtype(ty.state))
                if q8:
                    st[absmax_key(k)] = np.empty(_quant.n_blocks(p.size), np.float32)
            b = 2 + names.index(k)
            _store(v, st[k], ty.state, ty.stochastic, _rounding.sr_key(seed, t, index, b),
                   st.get(absmax_key(k)), is_signed(k), order=p)
        elif not isinstance(v, np.ndarray):
            st[k] = v
    if ty.master:
        st[MASTER][...] = pw
        _store(pw, p, ty.param, ty.stochastic,
               _rounding.sr_key(seed, t, index, _rounding.MIRROR_BUFFER), order=p)
    else:
        _store(pw, p, ty.param, ty.stochastic, _rounding.sr_key(seed, t, index, 0))
