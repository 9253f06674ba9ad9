"""The element types ringps reduces, as a table.

Each entry says how the bytes are stored in numpy (`storage`) and what reductions compute in
(`compute`). Most types reduce in themselves; bfloat16 has no numpy type, so it travels as
uint16 and reduces in float32, rounded back to nearest-even, which is what torch does.
Transports only ever see bytes, so adding a type here is all a new type needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputTypeError, reject


@dataclass(frozen=True)
class DType:
    name: str
    storage: np.dtype
    is_float: bool
    native: bool = True      # reductions run in the storage type itself

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize

    def to_compute(self, a: np.ndarray) -> np.ndarray:
        """A view or copy of stored elements in the type reductions run in."""
        return a

    def from_compute(self, a: np.ndarray, out: np.ndarray) -> None:
        """Store computed values `a` into `out` (storage type)."""
        if a is not out:
            np.copyto(out, a, casting="unsafe")


class _BFloat16(DType):
    def to_compute(self, a: np.ndarray) -> np.ndarray:
        return (a.astype(np.uint32) << 16).view(np.float32)

    def from_compute(self, a: np.ndarray, out: np.ndarray) -> None:
        bits = np.asarray(a, dtype=np.float32).view(np.uint32)
        rounded = (bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16     # round to nearest even
        nan = np.isnan(a)
        out[...] = np.where(nan, (bits >> 16) | 0x0040, rounded).astype(np.uint16)


DTYPES: dict[str, DType] = {
    "float16": DType("float16", np.dtype(np.float16), True),
    "bfloat16": _BFloat16("bfloat16", np.dtype(np.uint16), True, native=False),
    "float32": DType("float32", np.dtype(np.float32), True),
    "float64": DType("float64", np.dtype(np.float64), True),
    "int8": DType("int8", np.dtype(np.int8), False),
    "uint8": DType("uint8", np.dtype(np.uint8), False),
    "int32": DType("int32", np.dtype(np.int32), False),
    "int64": DType("int64", np.dtype(np.int64), False),
}

DTYPE_NAMES = sorted(DTYPES)


def lookup(name: str, shown: str | None = None) -> DType:
    """The DType called `name`; `shown` is how the caller spelled the type (e.g. torch.int16)."""
    if name not in DTYPES:
        raise reject(InputTypeError, "unsupported dtype", f"dtype {shown or name} is not "
                     f"supported (supported: {', '.join(DTYPE_NAMES)})")
    return DTYPES[name]
