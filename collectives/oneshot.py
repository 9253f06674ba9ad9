"""oneshot: every rank publishes its whole buffer and reduces every peer's copy itself.

The small-message allreduce (DeepSpeed's and gloo's shm "naive" allreduce, NCCL's LL
one-shot): one step and one latency, where every other strategy needs two or more, at the
price of every rank reading all n buffers: (n-1) * S bytes in per rank instead of the
ring's 2(n-1)/n * S. Over shared memory the publish is one staged copy that every peer reads
(transport.isend_many); over MPI it is n-1 sends.

    step  transfers                                       bytes sent per rank
    0     rank i -> every rank j != i: its whole buffer    (n-1) * S (shm: one copy of S)
          rank j reduces, into `total`, the n buffers in rank order 0, 1, ..., n-1

Reducing in rank order on every rank (not in order of arrival) makes every rank compute the
very same floating-point result, as the ring and blocked do by reducing each element once:
rank r reduces ranks 0 .. r-1 into `prefix` (scratch), waits until its own sends are out
(peers have read x, or its staged copy), then x = x op prefix (the ops commute exactly), then
x op= rank r+1, ..., n-1. No rank waits on a send before the others can reach it (each
needs only ranks below it), so this cannot deadlock on any transport.
Cost, as the model charges it (the Exchange below): one step, so alpha once; every rank
posts n-1 sends and takes n-1 messages, 2(n-1) * o at the busiest endpoint; (n-1) * S/B on
each rank's link: alpha + 2(n-1)o + (n-1)S/B.

On the board (every rank on one node, S <= 256 KB, a dtype with a C kernel: api._on_board
and transport/board.py) the same step runs whole in one C call: each rank copies x into its
board (the one publish), then reduces the n copies in rank order. The model charges it one
`board` post instead of alpha + 2(n-1)o (calibrate.coefficients): board + (n-1)S/B.
"""
from __future__ import annotations

import numpy as np

from .context import Context
from .schedule import CompactSchedule, Schedule, exchange


def allreduce(x: np.ndarray, ctx: Context) -> None:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    if n > 1:
        sends = t.isend_many(x, [p for p in range(n) if p != r])
        scratch = ctx.scratch(len(x))            # for transports that receive, then reduce
        prefix = None                            # ranks 0 .. r-1 reduced, in rank order
        for q in range(n):
            if q < r and prefix is None:
                prefix = ctx.scratch(len(x))
                t.wait(t.irecv(prefix, q))
            elif q < r:
                t.wait(t.irecv_reduce(prefix, q, scratch, ctx.combine))
            elif q == r:
                t.waitall(sends)                 # every peer has x (or its copy): x may change
                if prefix is not None:
                    ctx.combine(x, prefix)       # x op prefix == prefix op x: ops commute
            else:
                t.wait(t.irecv_reduce(x, q, scratch, ctx.combine))
    ctx.finalize(x)


def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    """Every rank sends its S bytes to every other rank, which reduces them."""
    return CompactSchedule([exchange(range(n), range(n), [count * itemsize] * n, "sender",
                                     reduce=True)])


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return allreduce_pattern(n, count, itemsize).expand()
