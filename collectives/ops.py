"""Reduce operations as a table: name -> numpy ufunc (and, for `avg`, a final scaling).

`combine(op, dtype, a, b, out)` is the one place an element-wise reduction happens, so that
every algorithm reduces the same way; device (CuPy) arrays go to the CUDA kernels of
kernels.py, host arrays to the numpy ufuncs.
`avg` is a sum followed by a division by the number of ranks, applied once, by whoever holds
the finished result; it is defined for floating types only (integer averages would truncate).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import is_device
from .dtypes import DType
from .errors import InputTypeError, InputValueError, reject


@dataclass(frozen=True)
class ReduceOp:
    name: str
    ufunc: np.ufunc
    average: bool = False
    float_only: bool = False


OPS: dict[str, ReduceOp] = {
    "sum": ReduceOp("sum", np.add),
    "avg": ReduceOp("avg", np.add, average=True, float_only=True),
    "prod": ReduceOp("prod", np.multiply),
    "max": ReduceOp("max", np.maximum),
    "min": ReduceOp("min", np.minimum),
}

OP_NAMES = sorted(OPS)


def lookup(name) -> ReduceOp:
    key = str(name).lower()
    if key not in OPS:
        raise reject(InputValueError, "unknown op",
                     f"unknown reduce op {name!r} (known: {', '.join(OP_NAMES)})")
    return OPS[key]


def check_dtype(op: ReduceOp, dtype: DType) -> None:
    if op.float_only and not dtype.is_float:
        raise reject(InputTypeError, "op invalid for dtype",
                     f"op {op.name!r} is not defined for integer dtype {dtype.name} "
                     f"(it would truncate); use 'sum' and divide")


def combine(op: ReduceOp, dtype: DType, a: np.ndarray, b: np.ndarray,
            out: np.ndarray | None = None) -> None:
    """out = a (op) b, element-wise; `out` defaults to `a` (reduce in place)."""
    out = a if out is None else out
    if is_device(a):
        from . import kernels
        kernels.combine(op.name, dtype.name, a, b, out)
    elif dtype.native:
        op.ufunc(a, b, out=out)
    else:
        dtype.from_compute(op.ufunc(dtype.to_compute(a), dtype.to_compute(b)), out)


def finalize(op: ReduceOp, dtype: DType, a: np.ndarray, ranks: int) -> None:
    """Apply what an op does after the reduction proper (avg: divide by the rank count)."""
    if not (op.average and ranks > 1 and a.size):
        return
    if is_device(a):
        from . import kernels
        kernels.scale(dtype.name, a, 1.0 / ranks)
    elif dtype.native:
        np.divide(a, ranks, out=a)
    else:
        dtype.from_compute(dtype.to_compute(a) / np.float32(ranks), a)
