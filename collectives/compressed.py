"""Compressed allreduce for the flat strategies (root, host, blocked, ring); `ps` and
`hierarchical` have theirs in ps/compressed.py. `allreduce(x, compression=...)` lands here.

Every rank starts from `w`, its float32 gradient (plus its residual with `+ef`). P(c) is the
codec's payload size for c elements (compression.py). Dense codecs decode, add and encode
again where the uncompressed strategy reduces; sparse codecs gather every rank's one
payload P(S) and each rank adds all n of them, in rank order, so every rank gets the same
sum:

    strategy  dense codec (fp16, bf16, int8, onebit)                  sparse codec (topk, randomk)
    root      i -> 0: P(S) of w_i; 0 adds them to w_0, encodes the     i -> 0: P(S); 0 -> i: the
              sum once; 0 -> i: P(S)                                   other n-1 payloads
    host      as root, the aggregator on rank 0                        as root
    blocked   i -> j: P(S/n) of block j of w_i; j adds them to its     i -> j: P(S), every i != j
              own, encodes once; j -> i: P(S/n)                        (a direct all-gather)
    ring      scatter-reduce step s: decode the partial chunk from     all-gather of the payloads
              the left, add w's chunk, encode, pass right (n-1 hops);  around the ring, n-1 steps
              the owner encodes the reduced chunk once; all-gather
              passes those payloads on unchanged

Extra error of dense codecs: a value is encoded once per hop it crosses, so the sum carries
up to n-1 (ring), 2 (blocked, root: once by each sender, once by the reducer) encoding errors
instead of one. Every encode is `Encoding.encode`, which adds its error to the encoding
rank's residual, so with `+ef` this extra error is fed back like the first. Every rank ends
with the decoded result of the same payloads, so all ranks hold the same values.

The schedules (`*_pattern`) are the uncompressed ones with P in place of the bytes, so
topology/ prices compressed variants (`bench scaling --preset ... --compression topk:0.01`).
"""
from __future__ import annotations

import importlib
import zlib

import numpy as np

from . import arrays, ops
from .check import agree
from .compression import check_dtype, compressor
from .context import Context
from .dtypes import DTYPES
from .errors import InputError, InputValueError, MismatchError, reject
from .schedule import CompactSchedule, exchange, gather, ring, scatter

AGGREGATOR = 0
# Strategy name -> the module with its `<name>_allreduce(w, encoding, ctx)` and
# `<name>_pattern(codec, n, count, **variant)`; ps/ registers its own (the core never
# imports it when imported).
STRATEGIES = {"root": "collectives.compressed", "host": "collectives.compressed",
              "blocked": "collectives.compressed", "ring": "collectives.compressed",
              "ps": "ps.compressed", "hierarchical": "ps.compressed"}
REDUCTIONS = ("sum", "avg")


def strategy(name: str, what: str):
    """`<name>_allreduce` or `<name>_pattern` of a strategy that compresses."""
    return getattr(importlib.import_module(STRATEGIES[name]), f"{name}_{what}")


def run(buf, *, op, algorithm, comm, check, compression, key):
    """allreduce(buf, compression=...): validate, agree across ranks, run, write back."""
    buffer = error = spec = None
    try:
        spec = compressor(compression)
        buffer = arrays.as_buffer(buf)
        reduce_op = ops.lookup(op)
        if reduce_op.name not in REDUCTIONS:
            raise reject(InputValueError, "op invalid for dtype", f"compression sums: op must "
                         f"be one of {', '.join(REDUCTIONS)}, got {reduce_op.name}")
        check_dtype(buffer.dtype.name)
        if algorithm not in STRATEGIES:
            raise reject(InputValueError, "unknown algorithm", f"compressed allreduce runs "
                         f"with {', '.join(STRATEGIES)}; got {algorithm!r}")
    except InputError as exc:
        error = exc
    if check:
        agree(comm.transport, collective="allreduce",
              length=len(buffer.array) if buffer else -1,
              dtype=buffer.dtype.name if buffer else "?",
              op=reduce_op.name if error is None else "?",
              algorithm=algorithm if algorithm in STRATEGIES else "?", root=0,
              segment_bytes=1, error=error)
        _agree_on_codec(comm.transport, spec.spec)
    elif error is not None:
        raise error
    x = buffer.array
    host = x if not buffer.device else arrays.pinned(len(x), x.dtype)
    if buffer.device:
        arrays.copy(host, x)
    w = np.asarray(buffer.dtype.to_compute(host), dtype=np.float32).copy()
    key = key if key is not None else (id(comm), host.__array_interface__["data"][0]
                                       if not buffer.device else x.data.ptr, len(x),
                                       buffer.dtype.name)
    encoding = spec.begin(w, key)
    from .api import _defaults
    ctx = Context(comm.transport, comm.rank, comm.size, DTYPES["float32"], ops.OPS["sum"],
                  _defaults()[1], comm)
    result = strategy(algorithm, "allreduce")(encoding.values, encoding, ctx)
    spec.end(encoding, key)
    if reduce_op.average:
        result /= comm.size
    buffer.dtype.from_compute(result, host)
    if buffer.device:
        arrays.copy(x, host)
    return buffer.original


def _agree_on_codec(transport, spec: str) -> None:
    mine = np.asarray([zlib.crc32(spec.encode())], dtype=np.int64)
    table = transport.exchange(mine)[:, 0]
    if (table != table[0]).any():
        raise MismatchError(f"ringps allreduce: ranks disagree on the compression (rank "
                            f"{transport.rank} uses {spec!r}); no data was moved")


# ---- running ----------------------------------------------------------------------------------

def root_allreduce(w, encoding, ctx: Context) -> np.ndarray:
    """The sum of every rank's w (what it is decoded to), on every rank."""
    n, r, t = ctx.size, ctx.rank, ctx.transport
    codec = encoding.codec
    if n == 1:
        return codec.decode(encoding.encode(w), len(w))
    if codec.sparse:
        return _add_all(codec, _root_gather(encoding.encode(w), ctx), len(w))
    size = codec.nbytes(len(w))
    if r != AGGREGATOR:
        t.wait(t.isend(encoding.encode(w), AGGREGATOR))
        payload = np.empty(size, np.uint8)
        t.wait(t.irecv(payload, AGGREGATOR))
        return codec.decode(payload, len(w))
    total = w.copy()
    received = [np.empty(size, np.uint8) for _ in range(n - 1)]
    t.waitall([t.irecv(buf, peer) for peer, buf in enumerate(received, start=1)])
    for buf in received:
        codec.decode_add(buf, total)
    payload = encoding.encode(total)
    t.waitall([t.isend(payload, peer) for peer in range(1, n)])
    return codec.decode(payload, len(w))


def _root_gather(mine: np.ndarray, ctx: Context) -> np.ndarray:
    """Every rank's payload, rank after rank, on every rank: through the aggregator, which
    sends each rank the n-1 payloads other than its own."""
    n, r, t = ctx.size, ctx.rank, ctx.transport
    size = len(mine)
    everyone = np.empty(n * size, np.uint8)
    everyone[r * size:(r + 1) * size] = mine
    if r != AGGREGATOR:
        t.wait(t.isend(mine, AGGREGATOR))
        t.waitall([t.irecv(everyone[:r * size], AGGREGATOR),
                   t.irecv(everyone[(r + 1) * size:], AGGREGATOR)])
        return everyone
    t.waitall([t.irecv(everyone[i * size:(i + 1) * size], i) for i in range(1, n)])
    sends = []
    for i in range(1, n):
        sends += [t.isend(everyone[:i * size], i), t.isend(everyone[(i + 1) * size:], i)]
    t.waitall(sends)
    return everyone


def _add_all(codec, everyone: np.ndarray, count: int) -> np.ndarray:
    total = np.zeros(count, np.float32)
    size = codec.nbytes(count)
    for i in range(len(everyone) // size if size else 0):
        codec.decode_add(everyone[i * size:(i + 1) * size], total)
    return total


host_allreduce = root_allreduce       # on CPU buffers the host's memory is rank 0's


def blocked_allreduce(w, encoding, ctx: Context) -> np.ndarray:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    codec = encoding.codec
    if codec.sparse:
        mine = encoding.encode(w)
        size = len(mine)
        everyone = np.empty(n * size, np.uint8)
        everyone[r * size:(r + 1) * size] = mine
        t.waitall([t.irecv(everyone[p * size:(p + 1) * size], p) for p in range(n) if p != r]
                  + [t.isend(mine, p) for p in range(n) if p != r])
        return _add_all(codec, everyone, len(w))
    blocks = ctx.chunks(len(w))
    a, b = blocks[r]
    received = {p: np.empty(codec.nbytes(b - a), np.uint8) for p in range(n) if p != r}
    requests = [t.irecv(buf, p) for p, buf in received.items()]
    requests += [t.isend(encoding.encode(w[slice(*blocks[p])], blocks[p][0]), p)
                 for p in ((r + k) % n for k in range(1, n))]
    t.waitall(requests)
    total = w[a:b].copy()
    for p in sorted(received):
        codec.decode_add(received[p], total)
    return _gather_blocks(encoding.encode(total, a), blocks, codec, ctx)


def _gather_blocks(mine: np.ndarray, blocks, codec, ctx: Context) -> np.ndarray:
    """Each rank's encoded reduced block to every rank, decoded in place."""
    n, r, t = ctx.size, ctx.rank, ctx.transport
    payloads = {p: np.empty(codec.nbytes(b - a), np.uint8) for p, (a, b) in enumerate(blocks)
                if p != r}
    payloads[r] = mine
    t.waitall([t.irecv(payloads[p], p) for p in range(n) if p != r]
              + [t.isend(mine, p) for p in range(n) if p != r])
    out = np.empty(blocks[-1][1], np.float32)
    for p, (a, b) in enumerate(blocks):
        out[a:b] = codec.decode(payloads[p], b - a)
    return out


def ring_allreduce(w, encoding, ctx: Context) -> np.ndarray:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    codec = encoding.codec
    right, left = (r + 1) % n, (r - 1) % n
    if codec.sparse:
        size = codec.nbytes(len(w))
        everyone = np.empty(n * size, np.uint8)
        everyone[r * size:(r + 1) * size] = encoding.encode(w)
        for s in range(n - 1):
            out, into = (r - s) % n, (r - s - 1) % n
            t.sendrecv(everyone[out * size:(out + 1) * size], right,
                       everyone[into * size:(into + 1) * size], left)
        return _add_all(codec, everyone, len(w))
    chunks = ctx.chunks(len(w))
    payloads: dict[int, np.ndarray] = {}
    c = (r - 1) % n
    outgoing = encoding.encode(w[slice(*chunks[c])], chunks[c][0]) if n > 1 else None
    total = w[slice(*chunks[r])]
    for s in range(n - 1):                      # scatter-reduce
        c = (r - s - 2) % n
        a, b = chunks[c]
        incoming = np.empty(codec.nbytes(b - a), np.uint8)
        t.sendrecv(outgoing, right, incoming, left)
        total = w[a:b].copy()
        codec.decode_add(incoming, total)
        if s < n - 2:
            outgoing = encoding.encode(total, a)
    payloads[r] = encoding.encode(total, chunks[r][0])
    for s in range(n - 1):                      # all-gather of the encoded reduced chunks
        out, into = (r - s) % n, (r - s - 1) % n
        payloads[into] = np.empty(codec.nbytes(chunks[into][1] - chunks[into][0]), np.uint8)
        t.sendrecv(payloads[out], right, payloads[into], left)
    result = np.empty(len(w), np.float32)
    for c, (a, b) in enumerate(chunks):
        result[a:b] = codec.decode(payloads[c], b - a)
    return result


# ---- schedules --------------------------------------------------------------------------------

def _sizes(codec, count: int, parts: int) -> list[int]:
    from .partition import chunk_bounds
    return [codec.nbytes(b - a) for a, b in chunk_bounds(count, parts)]


def root_pattern(codec, n: int, count: int, endpoint=0, placement=None) -> CompactSchedule:
    size = codec.nbytes(count)
    back = (n - 1) * size if codec.sparse else size
    return CompactSchedule([gather(range(n), endpoint, size, reduce=not codec.sparse),
                            scatter(endpoint, range(n), back)], dict(placement or {}))


def host_pattern(codec, n: int, count: int) -> CompactSchedule:
    return root_pattern(codec, n, count, "host", {"host": AGGREGATOR})


def blocked_pattern(codec, n: int, count: int) -> CompactSchedule:
    if codec.sparse:
        return CompactSchedule([exchange(range(n), range(n), [codec.nbytes(count)] * n,
                                         "sender")])
    blocks = _sizes(codec, count, n)
    return CompactSchedule([exchange(range(n), range(n), blocks, "receiver", reduce=True),
                            exchange(range(n), range(n), blocks, "sender")])


def ring_pattern(codec, n: int, count: int) -> CompactSchedule:
    if codec.sparse:
        return CompactSchedule([ring(range(n), [codec.nbytes(count)] * n, n - 1, first=0)])
    chunks = _sizes(codec, count, n)
    return CompactSchedule([ring(range(n), chunks, n - 1, first=-1, reduce=True),
                            ring(range(n), chunks, n - 1, first=0)])


def allreduce_pattern(algorithm: str, n: int, count: int, compression, **variant
                      ) -> CompactSchedule:
    """The compressed strategy's schedule (what topology/ prices): `variant` as the
    uncompressed strategy takes it (servers, placement, ranks_per_node); a ring layout is
    not used (the compressed ring runs in rank order)."""
    variant.pop("rings", None)
    codec = compressor(compression).codec
    return strategy(algorithm, "pattern")(codec, n, count, **variant)
