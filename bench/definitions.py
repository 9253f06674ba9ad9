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
UFUNC = {"sum": np.add, "avg": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
BLOCK = 1 << 20            # elements checked at a time, so the check needs little memory
PROD_SIGNED = np.array([1.0, -1.0, 2.0, 1.0])   # products stay non-zero, powers of two: exact
PROD_UNSIGNED = np.array([1.0, 1.0, 2.0, 1.0])


def pattern(rank: int, start: int, stop: int, op: str | None, dtype: str) -> np.ndarray:
    """Rank `rank`'s input for element indices [start, stop), as exact float64 values."""
    i = np.arange(start, stop, dtype=np.int64)
    if op == "prod":
        return (PROD_UNSIGNED if dtype == "uint8" else PROD_SIGNED)[(i + 2 * rank) % 4]
    return ((i * 7 + rank * 13) % 17 - (0 if dtype == "uint8" else 8)).astype(np.float64)


def reduced(ranks: int, start: int, stop: int, op: str, dtype: str):
    """(expected, tolerance) of the reduction of every rank's pattern over [start, stop).

    Integer results wrap the way the dtype does (a 16-rank int8 sum overflows identically in
    any order); float results allow one rounding per rank of the magnitudes involved."""
    acc = pattern(0, start, stop, op, dtype)
    magnitude = np.abs(acc)
    for r in range(1, ranks):
        values = pattern(r, start, stop, op, dtype)
        UFUNC[op](acc, values, out=acc)
        magnitude += np.abs(values)
    if op == "avg":
        acc /= ranks
        magnitude /= ranks
    if dtype not in EPS:
        return acc.astype(np.int64).astype(dtype).astype(np.float64), 0.0
    if op in ("max", "min"):
        return acc, 0.0
    scale = np.abs(acc) if op == "prod" else magnitude
    return acc, ranks * EPS[dtype] * scale


DEVICE = {"kind": "cpu"}      # bench --device: where every buffer of this run lives


def new_buffer(count: int, dtype: str):
    cuda = DEVICE["kind"] == "cuda"
    if dtype == "bfloat16":
        import torch
        return torch.zeros(count, dtype=torch.bfloat16, device="cuda" if cuda else "cpu")
    if cuda:
        import cupy
        return cupy.zeros(count, dtype=dtype)
    return np.zeros(count, dtype=dtype)


def load(buf, values: np.ndarray, start: int = 0) -> None:
    stop = start + len(values)
    if isinstance(buf, np.ndarray):
        buf[start:stop] = values.astype(buf.dtype)
    elif type(buf).__module__.startswith("cupy"):
        buf[start:stop].set(values.astype(buf.dtype))
    else:
        import torch
        buf[start:stop].copy_(torch.from_numpy(values))


def zero(buf) -> None:
    buf.zero_() if hasattr(buf, "zero_") else buf.fill(0)


def as_float64(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        return buf.astype(np.float64)
    if type(buf).__module__.startswith("cupy"):
        return buf.get().astype(np.float64)
    import torch
    return buf.to(torch.float64).cpu().numpy()


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

    def shared_buffer(self, case: Case):
        """The input buffer in the rank's shared segment (collectives.empty on its comm)."""
        buf = C.empty(len(case.x), case.dtype, comm=case.comm)
        zero(buf)
        return buf

    def baseline(self, case: Case, baseline):
        raise NotImplementedError

    # correctness: input of rank r, the expected result, and where the result lands
    def fill(self, case: Case) -> None:
        for lo in range(0, case.count, BLOCK):
            hi = min(lo + BLOCK, case.count)
            load(case.x, pattern(case.comm.rank, lo, hi, case.op, case.dtype), lo)

    def expected(self, case: Case, lo: int, hi: int):
        """(values, tolerance) of result elements [lo, hi)."""
        return reduced(case.comm.size, lo, hi, case.op, case.dtype)

    def result(self, case: Case, implementation: str):
        return case.x

    def wrong(self, case: Case, implementation: str) -> int:
        got = self.result(case, implementation)
        count = 0
        for lo in range(0, len(got), BLOCK):
            hi = min(lo + BLOCK, len(got))
            want, tolerance = self.expected(case, lo, hi)
            count += int(np.count_nonzero(~(np.abs(as_float64(got[lo:hi]) - want) <= tolerance)))
        return count


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

    def expected(self, case, lo, hi):
        offset = case.mine.start
        return super().expected(case, offset + lo, offset + hi)

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
        zero(case.x)
        start, stop = case.mine.start, case.mine.stop
        load(case.x, pattern(case.comm.rank, start, stop, None, case.dtype), start)

    def expected(self, case, lo, hi):
        """Element j comes from the rank whose chunk holds j."""
        parts = [pattern(r, max(lo, a), min(hi, b), None, case.dtype)
                 for r, (a, b) in enumerate(chunk_bounds(case.count, case.comm.size))
                 if max(lo, a) < min(hi, b)]
        return (np.concatenate(parts) if parts else np.zeros(0)), 0.0


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

    def expected(self, case, lo, hi):
        return pattern(self.root, lo, hi, None, case.dtype), 0.0


DEFINITIONS = {d.name: d for d in (Allreduce(), ReduceScatter(), Allgather(), Broadcast())}

__all__ = ["DEFINITIONS", "Definition", "Case", "Unavailable"]
