"""One timing harness for every collective, nccl-tests' BenchTime shape.

warm-up calls, then timed iterations each started from a barrier; per iteration the
slowest rank's time counts (one max-allreduce after the loop, outside the timed region);
median / min / max over iterations. `interleaved` times several candidates of one size in
turns (ROUNDS rounds, the iterations split between them, each round after one untimed
call), so that a machine whose speed drifts during a run (more ranks than cores: which rank
shares a core with which) slows every candidate alike instead of whichever was timed then.
Correctness is checked separately (definitions.py), never inside the timed loop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import collectives as C


ROUNDS = 5


@dataclass
class Timing:
    median: float      # seconds
    min: float
    max: float
    iters: int
    times: np.ndarray  # seconds per iteration (the slowest rank's)

    @classmethod
    def of(cls, times: np.ndarray) -> "Timing":
        return cls(float(np.median(times)), float(times.min()), float(times.max()),
                   len(times), times)


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
    return Timing.of(times)


def interleaved(runs: list[Callable[[], None]], comm, iters: int, warmup: int,
                done: Callable[[int], None] = lambda i: None) -> list[Timing]:
    """Timings of `runs`, each over `iters` iterations, taken in min(ROUNDS, iters) rounds
    of every run in turn (`warmup` calls before a run's first round, one before each
    later round: the call after another candidate's pays for its buffers, e.g. the page
    faults of scratch memory the allocator gave back meanwhile, which a job calling one
    algorithm over and over does not). Round k starts at run k (mod the runs), so no run
    always follows the same one: in one suite `root`, always timed right after gloo, came
    out 10-40% slower than the same algorithm timed later in the round (as auto's pick).
    done(i) once run i has had its last round."""
    rounds = max(1, min(ROUNDS, iters))
    shares = [iters // rounds + (k < iters % rounds) for k in range(rounds)]
    times: list[list[np.ndarray]] = [[] for _ in runs]
    for k, share in enumerate(shares):
        for j in range(len(runs)):
            i = (k + j) % len(runs)
            times[i].append(measure(runs[i], comm, share, warmup if k == 0 else 1).times)
            if k == rounds - 1:
                done(i)
    return [Timing.of(np.concatenate(parts)) for parts in times]


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
