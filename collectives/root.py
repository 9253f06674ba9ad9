"""root: everyone sends its whole buffer to rank 0, which reduces and sends the result back
(d2l's "GPU0" strategy: aggregate on one device).

    step  transfers                      bytes sent            bytes received
    0     every rank i != 0 -> rank 0    S by each i != 0      (n-1) * S by rank 0, reduced
    1     rank 0 -> every rank i != 0    (n-1) * S by rank 0   S by each i != 0

Rank 0's link carries 2(n-1) * S, so time grows linearly with n: 2(n-1) * S/B (d2l: 60 ms
for 4 GPUs and 160 MB on PCIe). Latency and injections: one path latency per step, and rank
0 takes n-1 messages (step 0) and posts n-1 (step 1): 2 * (alpha + (n-1) o) + 2(n-1) S/B
(+ gamma (n-1) S). The fewest messages of any strategy, so it wins small messages on few
ranks. In parameter-server terms: one server, colocated with worker 0.

Also here, the direct primitives the strategy is made of: `reduce` (all -> root; the root
receives two peers at a time into double-buffered scratch and reduces one while the next
arrives) and `broadcast` (root -> all, one message each).
"""
from __future__ import annotations

import numpy as np

from .context import Context
from .schedule import CompactSchedule, Schedule, gather, scatter


def reduce(x: np.ndarray, ctx: Context, root: int = 0) -> None:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    if r != root:
        t.wait(t.isend(x, root))
        return
    slots = [ctx.scratch(len(x)) for _ in range(min(2, n - 1))]
    requests = []
    for i, peer in enumerate((root + k) % n for k in range(1, n)):
        if i >= 2:
            t.wait(requests[i - 2])           # frees slot i % 2
        requests.append(t.irecv_reduce(x, peer, slots[i % 2], ctx.combine))
    t.waitall(requests)
    ctx.finalize(x)


def broadcast(x: np.ndarray, ctx: Context, root: int = 0) -> None:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    if r == root:
        t.waitall(t.isend_many(x, [(root + k) % n for k in range(1, n)]))
    else:
        t.wait(t.irecv(x, root))


def allreduce(x: np.ndarray, ctx: Context) -> None:
    reduce(x, ctx, root=0)
    broadcast(x, ctx, root=0)


def reduce_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    return CompactSchedule([gather(range(n), root, count * itemsize, reduce=True)])


def broadcast_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    return CompactSchedule([scatter(root, range(n), count * itemsize)])


def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    return reduce_pattern(n, count, itemsize) + broadcast_pattern(n, count, itemsize)


def reduce_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return reduce_pattern(n, count, itemsize, root).expand()


def broadcast_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return broadcast_pattern(n, count, itemsize, root).expand()


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return allreduce_pattern(n, count, itemsize).expand()
