"""One timing harness for every collective, nccl-tests' BenchTime shape.

warm-up calls, then timed iterations each started from a barrier; per iteration the
slowest rank's time counts (one max-allreduce after the loop, outside the timed region);
median / min / max over iterations. Correctness is checked separately (definitions.py),
never inside the timed loop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import collectives as C


@dataclass
class Timing:
    median: float      # seconds
    min: float
    max: float
    iters: int


def measure(run: Callable[[], None], comm, iters: int, warmup: int) -> Timing:
    for _ in range(warmup):
        run()
    times = np.empty(iters, dtype=np.float64)
    for i in range(iters):
        comm.barrier()
        start = time.perf_counter()
        run()
        times[i] = time.perf_counter() - start
    C.allreduce(times, op="max", comm=comm, check=False)
    return Timing(float(np.median(times)), float(times.min()), float(times.max()), iters)


SMALL = 1 << 20            # below this a call is mostly waiting on peers, not moving bytes


def auto_iters(nbytes: int, requested: int | None, budget_bytes: int = 1 << 30,
               floor: int = 3, ceiling: int = 20, small_ceiling: int = 100) -> int:
    """`requested` if given, else as many iterations as keep one row near `budget_bytes`:
    up to `ceiling` (nccl-tests' 20), or `small_ceiling` below SMALL bytes, where a call
    takes well under a millisecond and its time is mostly when the peers get a core (with
    more ranks than cores, medians of 20 such calls differ by 2x from run to run)."""
    if requested:
        return requested
    most = small_ceiling if nbytes < SMALL else ceiling
    return int(min(most, max(floor, budget_bytes // max(nbytes, 1))))
