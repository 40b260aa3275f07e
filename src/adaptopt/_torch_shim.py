"""The torch front end's per-step checks in C: tensors read through libtorch's
stable C ABI.

libtorch exports, for the models AOTInductor compiles, a C interface whose
functions take an ``at::Tensor *`` (``aoti_torch_get_data_ptr``,
``aoti_torch_get_sizes``, ...; ``torch/csrc/inductor/aoti_torch/c/shim.h``).
A ``torch.Tensor`` object keeps its ``at::Tensor`` right after the Python
object header.  With both, the compiled checks (``_kernels.Batch.check_torch``)
read a tensor's address, dtype, size, shape and strides in a few C calls
instead of a dozen Python attribute calls per tensor: the difference between
about 3 µs and 0.3 µs per parameter and step.

Nothing depends on it: ``enable`` first reads probe tensors both ways and
turns the C reading on only when every fact agrees, and the checks still take
the Python way for anything else (a tensor subclass, a tensor the shim cannot
read).  ``ADAPTOPT_TORCH_SHIM=0`` in the environment keeps it off.
"""

import ctypes
import glob
import os

import torch

from . import _kernels

_FUNCTIONS = ("aoti_torch_get_data_ptr", "aoti_torch_get_numel", "aoti_torch_get_dim",
              "aoti_torch_get_sizes", "aoti_torch_get_strides", "aoti_torch_get_dtype",
              "aoti_torch_get_device_type", "aoti_torch_get_layout",
              "aoti_torch_get_storage_offset", "aoti_torch_get_storage_size")
_DTYPES = ("float32", "float64", "bfloat16", "float16", "int8", "uint8", "int32", "int64")


def _library():
    """libtorch_cpu, already loaded by ``import torch``, or None."""
    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    for pattern in ("libtorch_cpu.so*", "libtorch_cpu.dylib", "torch_cpu.dll"):
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def _probes():
    """Tensors of varied kinds and layouts (each a plain Tensor or Parameter)."""
    a = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    return [a, a[:, 1:, ::2], a.permute(2, 0, 1), torch.zeros(0), torch.tensor(1.5),
            torch.nn.Parameter(torch.ones(5, 3, dtype=torch.float64)),
            torch.zeros(4, 4, dtype=torch.bfloat16).t(), torch.zeros(7, dtype=torch.float16)]


def _functions():
    """(the shim's function addresses and constants, {torch dtype: (code,
    element size)}), or None when libtorch does not export them."""
    lib = _library()
    try:
        fns = {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
               for name in _FUNCTIONS}
        for name, constant in (("cpu", "aoti_torch_device_type_cpu"),
                               ("strided", "aoti_torch_layout_strided")):
            f = getattr(lib, constant)
            f.restype = ctypes.c_int32
            fns[name] = f()
        size = lib.aoti_torch_dtype_element_size
        size.restype, size.argtypes = ctypes.c_size_t, [ctypes.c_int32]
        codes = {}
        for name in _DTYPES:
            f = getattr(lib, f"aoti_torch_dtype_{name}")
            f.restype = ctypes.c_int32
            code = f()
            codes[getattr(torch, name)] = (code, size(code))
    except (AttributeError, TypeError):  # no library, or one without the shim
        return None
    return fns, codes


def enable(on=True):
    """Turn the C reading of tensors on (when libtorch offers it and the
    probes agree) or off; returns whether it is on."""
    found = _functions() if on and os.environ.get("ADAPTOPT_TORCH_SHIM", "1") != "0" else None
    if found is None:
        return _kernels.torch_shim({}, None, None, {}, [])
    try:
        return _kernels.torch_shim(found[0], torch.Tensor, torch.nn.Parameter, found[1],
                                   _probes())
    except Exception:  # a torch whose tensors lack what the probes read (_cdata, ...)
        return _kernels.torch_shim({}, None, None, {}, [])
