"""Everything one collective call needs, handed to the algorithm: where bytes go (transport),
who we are (rank, size), and how to reduce (dtype, op). Algorithms take `(x, ctx)` and never
look further (the flat ones use the transport alone; `hierarchical` and `ps` reach the node
groups and the parameter server through `ctx.comm`), which is what lets the same code run on any communicator or transport."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import arrays, ops, partition
from .dtypes import DType
from .ops import ReduceOp
from .transport.base import Transport


@dataclass
class Context:
    transport: Transport
    rank: int
    size: int
    dtype: DType
    op: ReduceOp | None = None
    segment_bytes: int = partition.DEFAULT_SEGMENT_BYTES
    comm: object = None       # the Communicator, for strategies that need more than p2p
                              # (its node groups, or the PS servers behind it)

    def combine(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> None:
        ops.combine(self.op, self.dtype, a, b, out)

    def finalize(self, a: np.ndarray) -> None:
        ops.finalize(self.op, self.dtype, a, self.size)

    def scratch(self, count: int) -> np.ndarray:
        return arrays.empty(count, self.dtype)

    def chunks(self, count: int) -> list[tuple[int, int]]:
        return partition.chunk_bounds(count, self.size)

    def segments(self, start: int, stop: int) -> list[tuple[int, int]]:
        return partition.segment_bounds(start, stop, self.dtype.itemsize, self.segment_bytes)
