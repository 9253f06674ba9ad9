"""What a user hands us -> a flat numpy view of the same memory, and its DType.

numpy arrays are used as they are; CPU torch tensors through `Tensor.numpy()` (a zero-copy
view; torch is never imported here, only recognised). bfloat16 has no numpy type, so its
bytes are viewed as uint16. Every rejection is raised before any communication and names
the problem, because a wrong buffer found halfway through a ring is a hang on the peers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dtypes
from .dtypes import DType
from .errors import InputTypeError, InputValueError, reject as _reject


@dataclass
class Buffer:
    array: np.ndarray     # 1-D, contiguous, writeable, in the storage type
    dtype: DType
    original: Any         # what the caller passed, returned unchanged


def _is_torch_tensor(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "is_contiguous")


def _from_torch(t) -> tuple[np.ndarray, str]:
    if t.device.type != "cpu":
        raise _reject(InputTypeError, "tensor on a GPU",
                      f"a {t.device.type} tensor needs the GPU path "
                      f"(pip install ringps[cuda12] or ringps[cuda13]); this call takes CPU tensors")
    if not t.is_contiguous():
        raise _reject(InputValueError, "non-contiguous buffer",
                      f"non-contiguous tensor (shape {tuple(t.shape)}, stride {t.stride()}); "
                      f"call .contiguous() first")
    name = str(t.dtype).removeprefix("torch.")
    dtypes.lookup(name, shown=str(t.dtype))
    t = t.detach()
    if name == "bfloat16":
        import torch
        return t.view(torch.int16).numpy().view(np.uint16), name
    return t.numpy(), name


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
    else:
        raise _reject(InputTypeError, "unsupported buffer type",
                      f"buffer of type {type(obj).__name__} is not supported "
                      f"(numpy arrays and CPU torch tensors are)")
    return Buffer(array.reshape(-1), dtypes.DTYPES[name], obj)


def empty(count: int, dtype: DType) -> np.ndarray:
    """Host scratch for `count` elements of `dtype`."""
    return np.empty(count, dtype=dtype.storage)
