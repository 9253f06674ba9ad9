"""ring: the bandwidth-optimal allreduce, a ring reduce-scatter followed by a ring all-gather.

The buffer of S bytes is cut into n chunks (partition.chunk_bounds); rank r sends only to
right = r+1 and receives only from left = r-1 (mod n), so every link carries the same load
and adding a rank adds a link's worth of bandwidth.

    phase           step s      rank r sends to right   rank r receives from left     bytes/rank
    scatter-reduce  0 .. n-2    chunk (r-s-1) % n       chunk (r-s-2) % n, reduces    S/n
    all-gather      0 .. n-2    chunk (r-s) % n         chunk (r-s-1) % n, stores     S/n

After scatter-reduce rank r holds the reduced chunk r (the reduce_scatter result); the
all-gather circulates the reduced chunks. Each rank sends and receives 2(n-1)/n * S, the
lower bound for allreduce. Per step one path latency (alpha) and, at every rank, one send
posted and one chunk taken (2 injections, o each): 2(n-1) * (alpha + 2o) + 2(n-1)/n * S/B
(+ gamma (n-1)/n * S). A chunk's segments overlap on the wire and are not charged apart.

Pipelining: each chunk is cut into segments (segment_bytes). Segment j of step s+1 leaves
as soon as segment j of step s has been reduced, and the receives of step s+1 are posted
before step s is reduced, so the wire and the reduction overlap.

Several rings (the communicator's ring layout, rings.py): the allreduce splits the buffer
by the rings' weights and runs the table above on each part over its ring's rank order
(r read as the rank's position in it), all rings at once, so each rank keeps all of its
outgoing links busy: time 2(n-1)/n * S / (sum of the rings' bandwidths).

Also here: `broadcast` and `reduce` as pipelined chains along the ring (root, root+1, ...):
each segment is forwarded as soon as it arrives (or is reduced), so a chain of n ranks takes
about S/B + (n-2) * segment/B rather than (n-1) * S/B.
"""
from __future__ import annotations

from itertools import chain

import numpy as np

from .context import Context
from .rings import RingLayout
from .partition import segment_bounds
from .schedule import CompactSchedule, Schedule, Together, Transfer, chunk_nbytes, ring


def reduce_scatter(x: np.ndarray, ctx: Context) -> None:
    """Reduce in place; afterwards chunk ctx.rank of x holds the reduced chunk."""
    _lockstep([_reduce_scatter_steps(x, ctx, range(ctx.size))])


def allgather(x: np.ndarray, ctx: Context) -> None:
    """Chunk r of x holds rank r's part on entry; every chunk holds everyone's on exit."""
    _lockstep([_allgather_steps(x, ctx, range(ctx.size))])


def allreduce(x: np.ndarray, ctx: Context) -> None:
    """Over the communicator's ring layout (rings.py): one ring in rank order unless it
    names several, in which case each ring reduces its share of x and all run at once."""
    layout = ctx.rings
    if layout is None or ctx.size == 1:
        parts, orders = [(0, len(x))], [range(ctx.size)]
    else:
        parts, orders = layout.bounds(len(x)), layout.orders
    _lockstep([chain(_reduce_scatter_steps(x[a:b], ctx, order),
                     _allgather_steps(x[a:b], ctx, order))
               for (a, b), order in zip(parts, orders)])


# ---- one ring, step by step --------------------------------------------------------------
# Each generator posts its first transfers, yields, then yields again after every step, so
# that `_lockstep` can keep several rings on the wire together: a wait in one ring lets MPI
# progress the others. A ring over `order` is the table at the top with r read as the
# rank's position in `order` and r+1, r-1 as its neighbours there.

def _lockstep(runs) -> None:
    """Advance every generator one step in turn until all are done."""
    runs = list(runs)
    while runs:
        runs = [run for run in runs if next(run, StopIteration) is not StopIteration]


def _reduce_scatter_steps(x: np.ndarray, ctx: Context, order):
    n, t = ctx.size, ctx.transport
    order = list(order)
    r = order.index(ctx.rank)
    chunks = ctx.chunks(len(x))
    if n > 1:
        right, left = order[(r + 1) % n], order[(r - 1) % n]
        width = max(b - a for a, b in chunks)
        scratch = ctx.scratch(2 * width)

        def post_receives(step):
            start, stop = chunks[(r - step - 2) % n]
            slot = (step % 2) * width - start
            return [t.irecv_reduce(x[a:b], left, scratch[slot + a:slot + b], ctx.combine)
                    for a, b in ctx.segments(start, stop)]

        sends = [t.isend(x[a:b], right) for a, b in ctx.segments(*chunks[(r - 1) % n])]
        receives = post_receives(0)
        yield
        for step in range(n - 1):
            following = post_receives(step + 1) if step < n - 2 else []
            for request, (a, b) in zip(receives, ctx.segments(*chunks[(r - step - 2) % n])):
                t.wait(request)
                if step < n - 2:
                    sends.append(t.isend(x[a:b], right))
            receives = following
            yield
        t.waitall(sends)
    a, b = chunks[r]
    ctx.finalize(x[a:b])


def _allgather_steps(x: np.ndarray, ctx: Context, order):
    n, t = ctx.size, ctx.transport
    if n == 1:
        return
    order = list(order)
    r = order.index(ctx.rank)
    chunks = ctx.chunks(len(x))
    right, left = order[(r + 1) % n], order[(r - 1) % n]
    steps = [ctx.segments(*chunks[(r - step - 1) % n]) for step in range(n - 1)]
    receives = [[t.irecv(x[a:b], left) for a, b in segments] for segments in steps]
    sends = [t.isend(x[a:b], right) for a, b in ctx.segments(*chunks[r])]
    yield
    for step, segments in enumerate(steps):
        for request, (a, b) in zip(receives[step], segments):
            t.wait(request)
            if step < n - 2:
                sends.append(t.isend(x[a:b], right))
        yield
    t.waitall(sends)


def broadcast(x: np.ndarray, ctx: Context, root: int = 0) -> None:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    if n == 1:
        return
    position = (r - root) % n
    after, before = (r + 1) % n, (r - 1) % n
    segments = ctx.segments(0, len(x))
    if position == 0:
        t.waitall([t.isend(x[a:b], after) for a, b in segments])
        return
    receives = [t.irecv(x[a:b], before) for a, b in segments]
    sends = []
    for request, (a, b) in zip(receives, segments):
        t.wait(request)
        if position < n - 1:
            sends.append(t.isend(x[a:b], after))
    t.waitall(sends)


def reduce(x: np.ndarray, ctx: Context, root: int = 0) -> None:
    """Partial sums flow from root-1 back around to root; only root's x changes."""
    n, r, t = ctx.size, ctx.rank, ctx.transport
    position = (r - root) % n
    toward, away = (r - 1) % n, (r + 1) % n
    segments = ctx.segments(0, len(x))
    if n > 1 and position == n - 1:
        t.waitall([t.isend(x[a:b], toward) for a, b in segments])
        return
    if n > 1:
        scratch = ctx.scratch(len(x))
        if position == 0:
            t.waitall([t.irecv_reduce(x[a:b], away, scratch[a:b], ctx.combine)
                       for a, b in segments])
        else:
            receives = [t.irecv(scratch[a:b], away) for a, b in segments]
            sends = []
            for request, (a, b) in zip(receives, segments):
                t.wait(request)
                ctx.combine(x[a:b], scratch[a:b], out=scratch[a:b])
                sends.append(t.isend(scratch[a:b], toward))
            t.waitall(sends)
            return
    ctx.finalize(x)


# ---- schedules -------------------------------------------------------------------------

def reduce_scatter_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    """Step s: rank r sends chunk (r-s-1) % n to r+1, which reduces it (the table above)."""
    chunks = chunk_nbytes(count, n, itemsize)
    return CompactSchedule([ring(range(n), chunks, n - 1, first=-1, reduce=True)])


def allgather_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    """Step s: rank r sends chunk (r-s) % n to r+1."""
    chunks = chunk_nbytes(count, n, itemsize)
    return CompactSchedule([ring(range(n), chunks, n - 1, first=0)])


def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0,
                      rings=None) -> CompactSchedule:
    """The plain ring; with `rings` (a RingLayout or its text, rings.py) every ring of the
    layout does the same over its order and its part of the buffer, all in lockstep."""
    layout = RingLayout.parse(rings, n) if isinstance(rings, str) else rings
    if layout is None or layout.is_rank_order or n == 1:
        return reduce_scatter_pattern(n, count, itemsize) + allgather_pattern(n, count, itemsize)
    chunks = [chunk_nbytes(b - a, n, itemsize) for a, b in layout.bounds(count)]
    return CompactSchedule([
        Together(tuple(ring(o, c, n - 1, first=-1, reduce=True)
                       for o, c in zip(layout.orders, chunks))),
        Together(tuple(ring(o, c, n - 1, first=0) for o, c in zip(layout.orders, chunks)))])


def reduce_scatter_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return reduce_scatter_pattern(n, count, itemsize).expand()


def allgather_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return allgather_pattern(n, count, itemsize).expand()


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0,
                       rings=None) -> Schedule:
    return allreduce_pattern(n, count, itemsize, rings=rings).expand()


def _chain(hops: list[tuple[int, int]], count: int, itemsize: int, reduce: bool) -> Schedule:
    """A pipelined chain: segment s crosses hop h at step s + h, so every hop is busy at
    once, (n-2) + segments steps in all (S/B + (n-2) * segment/B, not (n-1) * S/B)."""
    sizes = [(b - a) * itemsize for a, b in segment_bounds(0, count, itemsize)]
    return Schedule([[Transfer(src, dst, sizes[t - h], reduce)
                      for h, (src, dst) in enumerate(hops) if 0 <= t - h < len(sizes)]
                     for t in range(len(sizes) + len(hops) - 1)] if hops else [])


def broadcast_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return _chain([((root + p) % n, (root + p + 1) % n) for p in range(n - 1)], count,
                  itemsize, False)


def reduce_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return _chain([((root + p) % n, (root + p - 1) % n) for p in range(n - 1, 0, -1)], count,
                  itemsize, True)
