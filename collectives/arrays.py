"""What a user hands us -> a flat view of the same memory, and its DType.

numpy arrays are used as they are; CPU torch tensors through `Tensor.numpy()` (a zero-copy
view; torch is never imported here, only recognised). Device buffers (CuPy arrays, CUDA
torch tensors through DLPack, no copy) become flat CuPy views: the GPU path, which needs
the `cuda12`/`cuda13` extra. bfloat16 has no numpy type, so its bytes are viewed as uint16.
Every rejection is raised before any communication and names the problem, because a wrong
buffer found halfway through a ring is a hang on the peers.

Also here, for the algorithms: scratch like a buffer (device or host), pinned host memory
for staging, and a copy that works between any two of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dtypes
from .dtypes import DType
from .errors import InputTypeError, InputValueError, reject as _reject


@dataclass(slots=True)
class Buffer:
    array: Any            # 1-D, contiguous, writeable, in the storage type: numpy or CuPy
    dtype: DType
    original: Any         # what the caller passed, returned unchanged

    @property
    def device(self) -> bool:
        return is_device(self.array)


def is_device(array) -> bool:
    """A CuPy array (device memory)?"""
    return type(array).__module__.startswith("cupy")


def _cupy(what: str):
    try:
        import cupy
        return cupy
    except ImportError:
        raise _reject(InputTypeError, "tensor on a GPU",
                      f"{what} needs the GPU path: pip install ringps[cuda12] or "
                      f"ringps[cuda13] (CuPy)") from None


def _is_torch_tensor(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "is_contiguous")


def _from_torch(t) -> tuple[Any, str]:
    if t.device.type not in ("cpu", "cuda"):
        raise _reject(InputTypeError, "unsupported buffer type",
                      f"a {t.device.type} tensor is not supported (cpu and cuda are)")
    if t.device.type == "cuda":
        cupy = _cupy("a cuda tensor")
    if not t.is_contiguous():
        raise _reject(InputValueError, "non-contiguous buffer",
                      f"non-contiguous tensor (shape {tuple(t.shape)}, stride {t.stride()}); "
                      f"call .contiguous() first")
    name = str(t.dtype).removeprefix("torch.")
    dtypes.lookup(name, shown=str(t.dtype))
    t = t.detach()
    if name == "bfloat16":
        import torch
        t = t.view(torch.int16)
    if t.device.type == "cuda":
        array = cupy.from_dlpack(t)
    else:
        array = t.numpy()
    return (array.view(np.uint16) if name == "bfloat16" else array), name


def _from_cupy(a) -> tuple[Any, str]:
    if not a.flags.c_contiguous:
        raise _reject(InputValueError, "non-contiguous buffer",
                      f"non-contiguous CuPy array (shape {a.shape}, strides {a.strides}); "
                      f"use cupy.ascontiguousarray first")
    name = _NUMPY_NAMES.get(np.dtype(a.dtype)) or np.dtype(a.dtype).name
    dtypes.lookup(name)
    return a, name


_NUMPY_NAMES = {np.dtype(name): name for name in dtypes.DTYPE_NAMES if name != "bfloat16"}


def _from_numpy(a: np.ndarray, writable: bool = True) -> tuple[np.ndarray, str]:
    if not a.flags.c_contiguous:
        raise _reject(InputValueError, "non-contiguous buffer",
                      f"non-contiguous array (shape {a.shape}, strides {a.strides}); "
                      f"use np.ascontiguousarray first")
    if writable and not a.flags.writeable:
        raise _reject(InputValueError, "read-only buffer",
                      "read-only array: collectives write their result in place")
    if not a.dtype.isnative:
        raise _reject(InputValueError, "non-native byte order",
                      f"array of byte-swapped dtype {a.dtype.str!r}; use "
                      f"a.astype(a.dtype.newbyteorder('='))")
    name = _NUMPY_NAMES.get(a.dtype) or a.dtype.name
    dtypes.lookup(name)
    if name == "bfloat16":            # ml_dtypes' bfloat16
        return a.view(np.uint16), name
    return a, name


def as_buffer(obj, writable: bool = True) -> Buffer:
    """Wrap `obj` (numpy array or CPU torch tensor) as a flat view; raise InputError if not fit.
    writable=False accepts read-only arrays (what is only sent, like a pushed gradient)."""
    if isinstance(obj, np.ndarray):
        array, name = _from_numpy(obj, writable)
    elif _is_torch_tensor(obj):
        array, name = _from_torch(obj)
    elif is_device(obj):
        array, name = _from_cupy(obj)
    else:
        raise _reject(InputTypeError, "unsupported buffer type",
                      f"buffer of type {type(obj).__name__} is not supported "
                      f"(numpy and CuPy arrays, CPU and CUDA torch tensors are)")
    return Buffer(array.reshape(-1), dtypes.DTYPES[name], obj)


def empty(count: int, dtype: DType, device: bool = False):
    """Scratch for `count` elements of `dtype`, in device memory (on the current device) or
    host memory."""
    if device:
        import cupy
        return cupy.empty(count, dtype=dtype.storage)
    return np.empty(count, dtype=dtype.storage)


def pinned(count: int, dtype) -> np.ndarray:
    """Page-locked host memory (fast, asynchronous device<->host copies)."""
    import cupyx
    return cupyx.empty_pinned(count, dtype=np.dtype(dtype))


def copy(dst, src) -> None:
    """dst[...] = src between any two of numpy / CuPy arrays of the same length."""
    if is_device(dst):
        if is_device(src):
            dst[...] = src
        else:
            dst.set(np.ascontiguousarray(src))
    elif is_device(src):
        src.get(out=dst)
    else:
        np.copyto(dst, src)
