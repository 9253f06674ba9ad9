"""One small definition per collective, as in nccl-tests: its bus-bandwidth factor, its
buffers, how each implementation (ringps algorithms, `mpi`, `gloo`) runs it once, and how
its result is checked against a float64 reference.

Bus bandwidth (nccl-tests' busbw) turns algbw = S/t into the speed each link must have run
at, so that numbers compare across rank counts: allreduce 2(n-1)/n, reduce-scatter and
all-gather (n-1)/n, broadcast 1.

The check fills every rank's input with small integers (distinct per rank), so sums,
products, maxima and minima are exact in every dtype and the `#wrong` column counts
elements that differ at all (avg allows one rounding).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import collectives as C
from collectives.partition import chunk_bounds

from .baselines import Unavailable

EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23, "float64": 2.0 ** -52}
REDUCE = {"sum": np.sum, "avg": np.mean, "prod": np.prod, "max": np.max, "min": np.min}


def pattern(rank: int, count: int, op: str | None, dtype: str) -> np.ndarray:
    i = np.arange(count, dtype=np.int64)
    if op == "prod":
        values = (i + rank) % 3 - (0 if dtype == "uint8" else 1)
    else:
        values = (i * 7 + rank * 13) % 17 - (0 if dtype == "uint8" else 8)
    return values.astype(np.float64)


def new_buffer(count: int, dtype: str):
    if dtype == "bfloat16":
        import torch
        return torch.zeros(count, dtype=torch.bfloat16)
    return np.zeros(count, dtype=dtype)


def load(buf, values: np.ndarray) -> None:
    if isinstance(buf, np.ndarray):
        buf[...] = values.astype(buf.dtype)
    else:
        import torch
        buf.copy_(torch.from_numpy(values))


def as_float64(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        return buf.astype(np.float64)
    import torch
    return buf.to(torch.float64).numpy()


@dataclass
class Case:
    """The buffers of one (collective, count, dtype, op) on this rank."""
    comm: object
    count: int
    dtype: str
    op: str | None
    x: object = None
    out: object = None

    @property
    def counts(self) -> list[int]:
        return [b - a for a, b in chunk_bounds(self.count, self.comm.size)]

    @property
    def mine(self) -> slice:
        return slice(*chunk_bounds(self.count, self.comm.size)[self.comm.rank])


class Definition:
    name: str
    uses_op = True

    def busbw_factor(self, n: int) -> float:
        raise NotImplementedError

    def case(self, comm, count, dtype, op) -> Case:
        return Case(comm, count, dtype, op if self.uses_op else None, x=new_buffer(count, dtype))

    def ringps(self, case: Case, algorithm: str, check: bool):
        raise NotImplementedError

    def baseline(self, case: Case, baseline):
        raise NotImplementedError

    # correctness: input of rank r, and where the result lands
    def fill(self, case: Case) -> None:
        load(case.x, pattern(case.comm.rank, case.count, case.op, case.dtype))

    def expected(self, case: Case) -> np.ndarray:
        inputs = np.stack([pattern(r, case.count, case.op, case.dtype)
                           for r in range(case.comm.size)])
        return REDUCE[case.op](inputs, axis=0)

    def result(self, case: Case, implementation: str):
        return case.x

    def wrong(self, case: Case, implementation: str) -> int:
        got = as_float64(self.result(case, implementation))
        want = self.expected(case)
        tolerance = 0.0
        if case.op == "avg" and case.dtype in EPS:
            tolerance = 2 * EPS[case.dtype] * np.maximum(1.0, np.abs(want))
        return int(np.count_nonzero(~(np.abs(got - want) <= tolerance)))


class Allreduce(Definition):
    name = "allreduce"

    def busbw_factor(self, n):
        return 2 * (n - 1) / n if n > 1 else 0.0

    def ringps(self, case, algorithm, check):
        return lambda: C.allreduce(case.x, case.op, algorithm, case.comm, check=check)

    def baseline(self, case, baseline):
        return baseline.allreduce(case.x, case.op)


class ReduceScatter(Definition):
    name = "reduce_scatter"

    def busbw_factor(self, n):
        return (n - 1) / n if n > 1 else 0.0

    def case(self, comm, count, dtype, op):
        case = super().case(comm, count, dtype, op)
        case.out = new_buffer(case.counts[comm.rank], dtype)
        return case

    def ringps(self, case, algorithm, check):
        return lambda: C.reduce_scatter(case.x, case.op, algorithm, case.comm, check=check)

    def baseline(self, case, baseline):
        return baseline.reduce_scatter(case.x, case.out, case.counts, case.op)

    def expected(self, case):
        return super().expected(case)[case.mine]

    def result(self, case, implementation):
        return case.out if implementation in ("mpi", "gloo") else case.x[case.mine]


class Allgather(Definition):
    name = "allgather"
    uses_op = False

    def busbw_factor(self, n):
        return (n - 1) / n if n > 1 else 0.0

    def ringps(self, case, algorithm, check):
        return lambda: C.allgather(case.x, algorithm, case.comm, check=check)

    def baseline(self, case, baseline):
        return baseline.allgather(case.x, case.counts)

    def fill(self, case):
        values = np.zeros(case.count)
        values[case.mine] = pattern(case.comm.rank, case.count, None, case.dtype)[case.mine]
        load(case.x, values)

    def expected(self, case):
        bounds = chunk_bounds(case.count, case.comm.size)
        return np.concatenate([pattern(r, case.count, None, case.dtype)[a:b]
                               for r, (a, b) in enumerate(bounds)])


class Broadcast(Definition):
    name = "broadcast"
    uses_op = False
    root = 0

    def busbw_factor(self, n):
        return 1.0

    def ringps(self, case, algorithm, check):
        return lambda: C.broadcast(case.x, self.root, algorithm, case.comm, check=check)

    def baseline(self, case, baseline):
        return baseline.broadcast(case.x, self.root)

    def expected(self, case):
        return pattern(self.root, case.count, None, case.dtype)


DEFINITIONS = {d.name: d for d in (Allreduce(), ReduceScatter(), Allgather(), Broadcast())}

__all__ = ["DEFINITIONS", "Definition", "Case", "Unavailable"]
