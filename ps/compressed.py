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
from collectives.schedule import CompactSchedule

from .allreduce import _group_of, _next_seq, _through_servers

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


def ps_pattern(codec, n: int, count: int, **variant) -> CompactSchedule:
    from .allreduce import allreduce_pattern
    return allreduce_pattern(n, count, 4, codec=codec, **variant)


def hierarchical_pattern(codec, n: int, count: int, **variant) -> CompactSchedule:
    from .hierarchical import allreduce_pattern
    return allreduce_pattern(n, count, 4, codec=codec, **variant)
