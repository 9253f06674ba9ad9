"""Everything one collective call needs, handed to the algorithm: where bytes go (transport),
who we are (rank, size), and how to reduce (dtype, op). Algorithms take `(x, ctx)` and never
look further (the flat ones use the transport alone; `hierarchical` and `ps` reach the node
groups and the parameter server through `ctx.comm`), which is what lets the same code run on
any communicator or transport."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import arrays, ops, partition
from .dtypes import DType
from .ops import ReduceOp
from .transport.base import Transport


@dataclass(slots=True)
class Context:
    transport: Transport
    rank: int
    size: int
    dtype: DType
    op: ReduceOp | None = None
    segment_bytes: int = partition.DEFAULT_SEGMENT_BYTES
    comm: object = None       # the Communicator, for strategies that need more than p2p
                              # (its node groups, or the PS servers behind it)
    device: bool = False      # the buffer is in device memory (scratch goes there too)
    rings: object = None      # the communicator's RingLayout (rings.py) for `ring`; None:
                              # one ring in rank order

    def combine(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> None:
        ops.combine(self.op, self.dtype, a, b, out)

    def finalize(self, a: np.ndarray) -> None:
        ops.finalize(self.op, self.dtype, a, self.size)

    def scratch(self, count: int):
        """Scratch where the buffer lives (device or host)."""
        return arrays.empty(count, self.dtype, self.device)

    def host_scratch(self, count: int) -> np.ndarray:
        """Host memory for staging: page-locked when the buffer is on a device."""
        return arrays.pinned(count, self.dtype.storage) if self.device else \
            arrays.empty(count, self.dtype)

    @staticmethod
    def copy(dst, src) -> None:
        arrays.copy(dst, src)

    def on_host(self) -> "Context":
        """The same call, reducing in host memory (d2l's CPU strategy on device buffers)."""
        return replace(self, device=False)

    def chunks(self, count: int) -> list[tuple[int, int]]:
        return partition.chunk_bounds(count, self.size)

    def segments(self, start: int, stop: int) -> list[tuple[int, int]]:
        return partition.segment_bounds(start, stop, self.dtype.itemsize, self.segment_bytes)
