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
very same floating-point sum, as the ring and blocked do by reducing each element once.
`total` is scratch, copied into x at the end: x is being sent while peers read it.
Cost: alpha + (n-1) * S/B on a switch; what the model prices is the Exchange below.
"""
from __future__ import annotations

import numpy as np

from .context import Context
from .schedule import CompactSchedule, Schedule, exchange


def allreduce(x: np.ndarray, ctx: Context) -> None:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    if n > 1:
        peers = [p for p in range(n) if p != r]
        sends = t.isend_many(x, peers)
        total = ctx.scratch(len(x))
        scratch = ctx.scratch(len(x))
        for q in range(n):                       # rank order: the same sum on every rank
            if q == r:
                if r == 0:
                    ctx.copy(total, x)
                else:
                    ctx.combine(total, x)
            elif q == 0:
                t.wait(t.irecv(total, q))
            else:
                t.wait(t.irecv_reduce(total, q, scratch, ctx.combine))
        t.waitall(sends)
        ctx.copy(x, total)
    ctx.finalize(x)


def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    """Every rank sends its S bytes to every other rank, which reduces them."""
    return CompactSchedule([exchange(range(n), range(n), [count * itemsize] * n, "sender",
                                     reduce=True)])


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return allreduce_pattern(n, count, itemsize).expand()
