"""hierarchical: reduce inside each node, go through the sharded PS across nodes, then
share the result inside each node; only one copy of each byte per node crosses the network.

With N nodes of L local ranks (the workers' Communicator knows them: `comm.node`):

    step  transfers                                          where        bytes per rank
    0     ring reduce-scatter among the L local ranks         in-node      (L-1)/L S
    1     local rank j pushes its reduced chunk j to the PS    cross-node   S/L, over k servers
    2     the PS returns the sum of the N nodes' chunks j      cross-node   S/L
    3     ring all-gather among the L local ranks             in-node      (L-1)/L S

Every local rank talks to the servers (not only the leader), so all NICs and all server
shards work at once. Latency and injections: the two in-node rings 2(L-1) * (alpha_node +
2o); the exchange one latency each way, local rank j posting k pushes and taking k replies,
a server taking N pushes and posting N replies: 2 * (alpha_net + max(k, N) o). With nodes of unequal size the chunks would not line up, so then each
node reduces to its leader (ring chain), the leaders go through the PS with the whole
buffer, and each leader broadcasts inside its node (ring chain).
"""
from __future__ import annotations

import numpy as np

from collectives import ring
from collectives.context import Context
from collectives.partition import chunk_bounds
from collectives.schedule import CompactSchedule, Exchange, Ring, Schedule, chunk_nbytes

from .allreduce import _group_of, _next_seq, _sum_op, _through_servers, servers_at


def _uniform(comm) -> bool:
    sizes: dict[int, int] = {}
    for node in comm.node_of_rank:
        sizes[node] = sizes.get(node, 0) + 1
    return len(set(sizes.values())) == 1


def allreduce(x: np.ndarray, ctx: Context) -> None:
    from .service import current
    kv = current()
    comm, node = ctx.comm, ctx.comm.node
    op = _sum_op(ctx)
    in_node = node.device_transport() if ctx.device else node.transport   # GPU in-node
    inner = Context(in_node, node.rank, node.size, ctx.dtype, op, ctx.segment_bytes, node,
                    ctx.device)
    outer = Context(ctx.transport, ctx.rank, ctx.size, ctx.dtype, op, ctx.segment_bytes, comm)
    group = _group_of(comm, kv)
    if _uniform(comm):
        ring.reduce_scatter(x, inner)
        a, b = inner.chunks(len(x))[node.rank]
        _through_servers(kv, x[a:b], outer, (group, "hierarchical", node.rank),
                         comm.num_nodes, op)
        ring.allgather(x, inner)
    else:
        ring.reduce(x, inner, 0)
        if node.rank == 0:
            _through_servers(kv, x, outer, (group, "hierarchical-leaders"), comm.num_nodes,
                             op)
        else:
            _next_seq(comm)                  # stay in step with the leaders' call count
        ring.broadcast(x, inner, 0)
    ctx.finalize(x)


def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0,
                      ranks_per_node: int | None = None, servers: int | None = None,
                      placement: str = "per-node", codec=None) -> CompactSchedule:
    """ranks_per_node L (default: all n on one node) must divide n; servers k (default:
    one per node, on the nodes: placement as in ps.allreduce.servers_at). With a `codec`
    (ps/compressed.py) the pushes carry its payloads and the rest moves float32."""
    local = n if ranks_per_node is None else ranks_per_node
    if local < 1 or n % local:
        raise ValueError(f"hierarchical schedule: ranks_per_node={ranks_per_node} must divide "
                         f"{n} ranks")
    nodes = n // local
    names, ranks, locations = servers_at(nodes if servers is None else servers, placement)
    itemsize = itemsize if codec is None else 4
    pushed = (lambda c: c * itemsize) if codec is None else codec.nbytes
    chunks = tuple(chunk_nbytes(count, local, itemsize))
    rings = tuple(tuple(range(m * local, (m + 1) * local)) for m in range(nodes))
    pushes, pulls = [], []
    for j, (a, b) in enumerate(chunk_bounds(count, local)):
        parts = [d - c for c, d in chunk_bounds(b - a, len(names))]
        used = [i for i, elements in enumerate(parts) if elements]
        if used:
            workers = tuple(m * local + j for m in range(nodes))
            shards = tuple(names[i] for i in used)
            pushes.append((workers, shards, tuple(pushed(parts[i]) for i in used)))
            pulls.append((shards, workers, tuple(parts[i] * itemsize for i in used)))
    return CompactSchedule([Ring(rings, chunks, local - 1, -1, True),
                            Exchange(tuple(pushes), "receiver", True),
                            Exchange(tuple(pulls), "sender"),
                            Ring(rings, chunks, local - 1, 0)], ranks, locations)


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0, **variant) -> Schedule:
    return allreduce_pattern(n, count, itemsize, root, **variant).expand()


def allreduce_variants(nodes: int, ranks_per_node: int) -> dict[str, dict]:
    """What bench scaling --preset draws: one server shard per node, on the nodes."""
    return {"hierarchical": {"ranks_per_node": ranks_per_node, "servers": nodes}}
