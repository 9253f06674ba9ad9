"""ps: allreduce through the parameter server's shards (BytePS's summation service).

Every worker cuts its buffer into parts (4 segments each, 4 MiB by default as in BytePS, at
least one per server); part p goes to server p mod k, which reduces the W copies as they
arrive and sends the result back to each worker. No keys, no state: the server only sums.

    step  transfers                                 bytes
    0     worker i -> server (p mod k), part p       S from every worker, S/k into each server
    1     server (p mod k) -> worker i, part p       S to every worker, W S/k out of each server

    cost  max(S/B_worker, W S/(k B_server)) per direction: with k = W colocated servers this
          is `blocked`; with one dedicated server it is `host` (d2l's CPU).
    alpha one path latency per step; injections: a worker posts k sends (step 0) and takes k
          replies (step 1), a server takes W pushes and posts W replies: 2 (alpha + max(k, W) o).
          The schedule has one transfer per worker and server; the 4-segment parts a worker
          actually cuts its share into pipeline, and are not charged apart.

A part's reply lands in the same memory it was sent from, so its receive is posted only
once its send has completed (MPI forbids touching a buffer a send is still reading).
`hierarchical` (ps/hierarchical.py) runs the same exchange on one chunk per local rank.
"""
from __future__ import annotations

import time

import numpy as np

from collectives import arrays, ops, partition
from collectives.context import Context
from collectives.schedule import CompactSchedule, Schedule, exchange

from . import protocol
from .protocol import PSError

MAX_PARTS_PER_SERVER = 64
PART_SEGMENTS = 4       # a part is 4 segments: BytePS's 4 MB partitions at the default 1 MiB


def allreduce(x: np.ndarray, ctx: Context) -> None:
    from .service import current           # (mpi4py only when run, never to price a schedule)
    kv = current()
    group = _group_of(ctx.comm, kv)
    _through_servers(kv, x, ctx, (group, "ps"), ctx.comm.size, _sum_op(ctx))
    ctx.finalize(x)


def _sum_op(ctx: Context):
    """avg is a sum everywhere but at the very end (divided by all W workers)."""
    return ops.OPS["sum"] if ctx.op.average else ctx.op


def _group_of(comm, kv) -> str:
    """Who takes part (world ranks), so calls on different communicators never mix."""
    cached = getattr(comm, "_ps_group", None)
    if cached is None:
        world = kv.wire.world_ranks(comm.mpi)
        cached = comm._ps_group = ",".join(map(str, world))
        comm._ps_seq = 0
    return cached


def _next_seq(comm) -> int:
    comm._ps_seq += 1
    return comm._ps_seq


def _through_servers(kv, x, ctx: Context, group, expected: int, op, encoding=None,
                     start: int = 0) -> None:
    """Send every part of x to its server; each reply (the reduction over `expected`
    contributors of that part) lands back in x. Device memory goes through pinned host
    memory: the servers are host processes. With an `encoding` (ps/compressed.py: x is
    float32 at [start, start+len(x)) of the tensor) each part travels encoded and the
    server decodes it before summing."""
    if arrays.is_device(x):
        staged = arrays.pinned(len(x), x.dtype)
        arrays.copy(staged, x)
        _through_servers(kv, staged, ctx, group, expected, op)
        arrays.copy(x, staged)
        return
    seq = _next_seq(ctx.comm)
    k = kv.servers
    bounds = part_bounds(len(x), x.nbytes, k, ctx.segment_bytes)
    pending = []
    for p, (a, b) in enumerate(bounds):
        server = p % k
        dest = kv.server_ranks[server]
        rid = kv.next_rid()
        header = {"op": "allreduce", "rid": rid, "group": group, "seq": seq, "part": p,
                  "expected": expected, "dtype": ctx.dtype.name, "reduce": op.name,
                  "payload": [(b - a) * ctx.dtype.itemsize], "expects_payload": True}
        data = payload = x[a:b]
        if encoding is not None:
            payload = encoding.encode(data, start + a)
            header.update(codec=encoding.codec.name, count=b - a, payload=[len(payload)])
        sent = kv.wire.request(dest, header, [payload])
        kv.count(server, sent=payload.nbytes, received=data.nbytes)
        pending.append({"sent": sent, "reply": kv.wire.reply_header(dest, rid), "data": data,
                        "dest": dest, "rid": rid, "recv": None, "server": server,
                        "payload": payload})
    _drain(kv, pending)


def part_bounds(count: int, nbytes: int, servers: int, segment_bytes: int) -> list[tuple]:
    """The non-empty parts a buffer travels to the servers in (part p to server p mod k)."""
    part_bytes = max(1, PART_SEGMENTS * segment_bytes)
    parts = max(servers, min(-(-nbytes // part_bytes), MAX_PARTS_PER_SERVER * servers))
    return [(a, b) for a, b in partition.chunk_bounds(count, parts) if b > a]


def _drain(kv, pending: list[dict]) -> None:
    idler = protocol.Idler()
    deadline = time.monotonic() + kv.timeout
    answers = []
    while pending:
        progressed = False
        still = []
        for part in pending:
            if part["recv"] is None:
                if not kv.wire.done(part["sent"]):
                    still.append(part)
                    continue
                part["recv"] = kv.wire.reply_payload(part["dest"], part["rid"], part["data"])
                progressed = True
            if "answer" not in part:
                done, answer = part["reply"].test()
                if done:
                    part["answer"] = answer
            if "answer" in part and kv.wire.done([part["recv"]]):
                answers.append((part["server"], part["answer"]))
                progressed = True
            else:
                still.append(part)
        pending = still
        if progressed:
            idler.reset()
        elif time.monotonic() > deadline:
            servers = sorted({p["server"] for p in pending})
            raise protocol.PSTimeout(f"ringps: worker {kv.rank} timed out after "
                                     f"{kv.timeout:g} s in an allreduce through the PS, "
                                     f"waiting for server(s) {servers}")
        else:
            idler.idle()
    problems = [f"server {s}: {a['error']}" for s, a in answers if not a["ok"]]
    if problems:
        raise PSError(f"ringps: worker {kv.rank}: allreduce through the PS failed: "
                      + "; ".join(sorted(set(problems))))


# -- schedules ----------------------------------------------------------------------------------
PLACEMENTS = ("dedicated", "per-node", "colocated")


def server_endpoint(j: int) -> tuple[str, int]:
    return ("server", j)


def servers_at(k: int, placement: str) -> tuple[list, dict, dict]:
    """Server endpoints, their accounting ranks and their places on a machine:
    dedicated: shard j on the j-th spare node (a machine of its own, as the last S ranks
    of a job are on a cluster); per-node: on the host of the j-th node (the last local
    rank of a node, serving beside that node's workers); colocated: on rank j itself
    (d2l's reading: `blocked` is a PS with n colocated servers)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown server placement {placement!r} (known: {', '.join(PLACEMENTS)})")
    names = [server_endpoint(j) for j in range(k)]
    if placement == "colocated":
        return names, {name: j for j, name in enumerate(names)}, {}
    where = "spare" if placement == "dedicated" else "node"
    return names, {}, {name: (where, j) for j, name in enumerate(names)}


def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0,
                      servers: int | None = None, placement: str = "colocated", codec=None
                      ) -> CompactSchedule:
    """servers: k shards (default n); placement as in servers_at. The default, n shards
    colocated with the workers, fits every topology (and prices like `blocked`); the
    variants below put them on machines of their own. With a `codec` (ps/compressed.py)
    the pushes carry its payloads and the replies float32."""
    k = n if servers is None else servers
    names, ranks, locations = servers_at(k, placement)
    itemsize = itemsize if codec is None else 4
    parts = [b - a for a, b in partition.chunk_bounds(count, k)]
    used = [j for j in range(k) if parts[j]]
    names = [names[j] for j in used]
    pushes = [parts[j] * itemsize if codec is None else codec.nbytes(parts[j]) for j in used]
    pulls = [parts[j] * itemsize for j in used]
    return CompactSchedule([exchange(range(n), names, pushes, "receiver", reduce=True),
                            exchange(names, range(n), pulls, "sender")], ranks, locations)


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0, **variant) -> Schedule:
    return allreduce_pattern(n, count, itemsize, root, **variant).expand()


def allreduce_variants(nodes: int, ranks_per_node: int) -> dict[str, dict]:
    """What bench scaling --preset draws: PS with 1, 4 and n dedicated servers, and n
    servers sharing the workers' nodes."""
    dedicated = {"placement": "dedicated"}
    return {"ps(1 server)": {"servers": 1, **dedicated},
            "ps(4 servers)": {"servers": 4, **dedicated},
            "ps(n servers)": {"servers": nodes, **dedicated},
            "ps(n per-node)": {"servers": nodes, "placement": "per-node"}}
