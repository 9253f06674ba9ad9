"""Compressed `ps` and `hierarchical` (BytePS): pushes travel encoded, each server decodes
them before it sums, and the sum comes back in float32.

    strategy      step                                               bytes
    ps            worker i -> server (p mod k): part p of w, encoded  P(part) per part
                  server (p mod k) -> worker i: the part's sum        4 bytes per element
    hierarchical  ring reduce-scatter of w inside the node            uncompressed, float32
                  local rank j pushes its reduced chunk j, encoded    P(chunk part), cross-node
                  the servers return the sums of the N nodes' chunks  4 bytes per element
                  ring all-gather inside the node                     uncompressed, float32

Only what crosses nodes is compressed (hierarchical). The server decodes each push once
(sparse codecs add their pairs into the part's sum), so sparse pushes are aggregated from
(index, value) pairs and never re-encoded; the pull is not compressed (a sum of W sparse
pushes is no longer sparse). Each push's encode error goes to the pushing rank's residual
with `+ef` (compression.Encoding).
"""
from __future__ import annotations

import numpy as np

from collectives import ops, ring
from collectives.context import Context
from collectives.dtypes import DTYPES
from collectives.partition import chunk_bounds
from collectives.schedule import CompactSchedule, Exchange, Ring, exchange

from .allreduce import _group_of, _next_seq, _through_servers, servers_at

SUM = ops.OPS["sum"]
FLOAT32 = DTYPES["float32"]


def ps_allreduce(w: np.ndarray, encoding, ctx: Context) -> np.ndarray:
    from .service import current
    kv = current()
    _through_servers(kv, w, ctx, (_group_of(ctx.comm, kv), "ps"), ctx.comm.size, SUM,
                     encoding)
    return w


def hierarchical_allreduce(w: np.ndarray, encoding, ctx: Context) -> np.ndarray:
    from .hierarchical import _uniform
    from .service import current
    kv = current()
    comm, node = ctx.comm, ctx.comm.node
    inner = Context(node.transport, node.rank, node.size, FLOAT32, SUM, ctx.segment_bytes,
                    node)
    group = _group_of(comm, kv)
    if _uniform(comm):
        ring.reduce_scatter(w, inner)
        a, b = inner.chunks(len(w))[node.rank]
        _through_servers(kv, w[a:b], ctx, (group, "hierarchical", node.rank), comm.num_nodes,
                         SUM, encoding, a)
        ring.allgather(w, inner)
    else:
        ring.reduce(w, inner, 0)
        if node.rank == 0:
            _through_servers(kv, w, ctx, (group, "hierarchical-leaders"), comm.num_nodes, SUM,
                             encoding)
        else:
            _next_seq(comm)
        ring.broadcast(w, inner, 0)
    return w


def ps_pattern(codec, n: int, count: int, servers: int | None = None,
               placement: str = "colocated") -> CompactSchedule:
    k = n if servers is None else servers
    names, ranks, locations = servers_at(k, placement)
    bounds = chunk_bounds(count, k)
    used = [j for j, (a, b) in enumerate(bounds) if b > a]
    pushes = [codec.nbytes(bounds[j][1] - bounds[j][0]) for j in used]
    pulls = [4 * (bounds[j][1] - bounds[j][0]) for j in used]
    names = [names[j] for j in used]
    return CompactSchedule([exchange(range(n), names, pushes, "receiver", reduce=True),
                            exchange(names, range(n), pulls, "sender")], ranks, locations)


def hierarchical_pattern(codec, n: int, count: int, ranks_per_node: int | None = None,
                         servers: int | None = None, placement: str = "per-node"
                         ) -> CompactSchedule:
    local = n if ranks_per_node is None else ranks_per_node
    if local < 1 or n % local:
        raise ValueError(f"hierarchical schedule: ranks_per_node={ranks_per_node} must divide "
                         f"{n} ranks")
    nodes = n // local
    names, ranks, locations = servers_at(nodes if servers is None else servers, placement)
    chunks = tuple(4 * (b - a) for a, b in chunk_bounds(count, local))
    rings = tuple(tuple(range(m * local, (m + 1) * local)) for m in range(nodes))
    pushes, pulls = [], []
    for j, (a, b) in enumerate(chunk_bounds(count, local)):
        parts = chunk_bounds(b - a, len(names))
        used = [i for i, (c, d) in enumerate(parts) if d > c]
        if used:
            workers = tuple(m * local + j for m in range(nodes))
            shards = tuple(names[i] for i in used)
            pushes.append((workers, shards, tuple(codec.nbytes(parts[i][1] - parts[i][0])
                                                  for i in used)))
            pulls.append((shards, workers, tuple(4 * (parts[i][1] - parts[i][0])
                                                 for i in used)))
    return CompactSchedule([Ring(rings, chunks, local - 1, -1, True),
                            Exchange(tuple(pushes), "receiver", True),
                            Exchange(tuple(pulls), "sender"),
                            Ring(rings, chunks, local - 1, 0)], ranks, locations)
