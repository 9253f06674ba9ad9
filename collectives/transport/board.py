"""The board: a whole small allreduce, or one control-plane exchange, in one C call.

When every rank of a communicator is on one node, each rank's control segment ends with a
board that every peer maps. Python costs some ten microseconds per shared-memory message
(bench/CPU.md); the board does a whole one-shot allreduce (`oneshot`: publish, wait for
everyone, reduce every copy) and the metadata check riding on it in one call into C
(_board.c), and the control plane's exchanges (the check of every other call, barriers) in
another.

    a rank's board       bytes
    SEQ                  one line: how many posts this rank has made
    header[2]            256 each: has-data flag, word count, the row (up to 30 int64)
    data[2]              CAPACITY each: the posted bytes

    post number `seq` of rank r (every rank makes the same posts in the same order)
    step  who      what
    1     r        header[seq % 2] = (data?, words, row); with data, data[seq % 2] = x
    2     r        SEQ = seq (release store: peers see 1 before 2)
    3     r        wait until every rank's SEQ >= seq (acquire loads), backing off like
                   every wait (spin, yield, then short sleeps) up to the deadline
    4     r        exchange: copy every rank's row out. allreduce: rows all equal and every
                   rank posted data: x = data_0 op data_1 op ... op data_{n-1}, in rank order,
                   so every rank computes the same bits as the Python `oneshot` does; rows
                   differ: MismatchError on every rank (check.explain names the field and
                   the ranks); a rank posted no data (it called with check on through the
                   Python path, say): every rank runs the registered algorithm in Python

Why two slots: rank r writes slot seq % 2 only after every rank posted seq - 1 (step 3 of
its previous post), and a rank posts seq - 1 only after it finished post seq - 2, the last
one that read that slot. So no barrier is needed between calls, and a rank is never more than
one post ahead of the slowest.

The allreduce's row is the metadata check's row (check.row), its length field filled in by C,
so the check costs nothing on this path, whatever `check` says. A rank waiting at the board
moves no other transfer: the allreduce is only taken at a call's start, when the transport
has nothing pending; an exchange with transfers pending waits in Python instead, moving them.
A wait that passes half the timeout warns; past the timeout it raises PeerTimeout naming the
ranks whose post has not come. C waits at most CHUNK at a time, so Ctrl-C still reaches
Python while a peer is late. A communicator of more than 256 ranks on one node has no board.
"""
from __future__ import annotations

import time

import numpy as np

from .base import Request, pause, spin_budget

try:
    from . import _board
    PROBLEM = None
except ImportError as exc:              # not compiled (no C compiler at install): Python only
    _board, PROBLEM = None, f"the C board is not built ({exc})"

CAPACITY = 256 << 10                    # bytes in one data slot: the largest board allreduce
KINDS = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.int8): 2,
         np.dtype(np.uint8): 3, np.dtype(np.int32): 4, np.dtype(np.int64): 5}
OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}
MAX_VALUES = 30                         # int64 values in a row
DONE, ROWS_DIFFER, NO_DATA, NOT_ELIGIBLE = 0, 1, 2, 3
SPIN_SECONDS = 20e-6
CHUNK = 0.25                            # seconds a C wait lasts before Python looks again
STORE_CHUNK = 0.005                     # ... under torchrun, where a rank that ends the job
                                        # leaves its reason in the store: the agent kills the
                                        # others within tens of ms, so look that often


def nbytes() -> int:
    """Bytes a board takes at the end of a control segment (0 where C is not built)."""
    return 0 if _board is None else _board.DATA_AT + 2 * CAPACITY


def usable(ranks: int) -> bool:
    """Whether a communicator of `ranks` ranks, all on one node, gets a board (the same
    answer on every rank)."""
    return _board is not None and 1 < ranks <= _board.MAX_RANKS


def attach(addresses: list[int], rank: int, keep):
    """The board over every rank's mapped board (addresses in rank order; `keep` holds the
    mappings alive as long as the board). With more ranks than this process's cores a wait
    yields at once instead of spinning first: a peer that is not running cannot post until
    someone gives up a core."""
    return _board.Board(addresses, rank, CAPACITY, spin_budget(len(addresses), SPIN_SECONDS),
                        keep)


def chunk(inner) -> float:
    """The longest C wait over this inner transport: STORE_CHUNK where peers that end the
    job say so through torch's store (gloo under torchrun), else CHUNK."""
    return STORE_CHUNK if getattr(inner, "store", None) is not None else CHUNK


def first_wait(transport) -> float:
    """How long a board call waits in C before Python looks again: half the timeout (the
    stall warning), at most the transport's chunk so that a signal (Ctrl-C) or a peer that
    ended the job is seen within it."""
    return min(transport.timeout / 2, transport.board_chunk)


class _Awaited(Request):
    """A rank whose post has not come, as a stuck request for the timeout message."""

    def __init__(self, peer: int, what: str):
        super().__init__(None, what, peer, 0)

    def describe(self) -> str:
        """In the words of every other transport's check: a board post is this call's
        metadata row (with its data, for an allreduce on the board)."""
        return f"exchange metadata with rank {self.peer}"


def _wait(transport, result, what: str, start: float) -> None:
    """Wait out a post that C returned unfinished (`result`: the ranks missing), warning at
    half the timeout and raising PeerTimeout past it; with transfers pending, keep them
    moving while waiting."""
    board, last = transport.board, start
    peer_ended_job = getattr(transport.inner, "_peer_ended_job", None)   # torchrun's store
    while isinstance(result, tuple):
        if peer_ended_job is not None:
            peer_ended_job()            # a rank that ended the job said why: stop waiting
        now = time.monotonic()
        missing = result
        transport._overdue(start, now, lambda: [_Awaited(p, what) for p in missing])
        if transport._busy():
            if transport._progress():
                last = now
            pause(now - last, transport.spin)
            result = board.wait(0.0)
        else:
            half = start + transport.timeout / 2
            mark = half if now < half else start + transport.timeout + 1e-3
            result = board.wait(min(max(mark - now, 0.0), transport.board_chunk),
                                now - start)            # idle all along: keep sleeping


def exchange(transport, values: np.ndarray) -> np.ndarray:
    """Allgather one int64 row (at most 30 values) through the board."""
    table = np.empty((transport.size, values.size), dtype=np.int64)
    start = time.monotonic()
    busy = transport._busy()
    result = transport.board.exchange(values, table, 0.0 if busy else first_wait(transport))
    if isinstance(result, tuple):
        _wait(transport, result, "metadata", start)
        transport.board.table(table)
    return table


def finish(transport, missing: tuple, x: np.ndarray, row: bytes, kind: int, op: int) -> int:
    """An allreduce whose C call returned `missing` after first_wait: wait out the rest
    (a stall warning at half the timeout, PeerTimeout past it), then compare and reduce:
    DONE, ROWS_DIFFER or NO_DATA."""
    _wait(transport, missing, "allreduce", time.monotonic() - first_wait(transport))
    return transport.board.finish(x, kind, op)


def table(transport, words: int) -> np.ndarray:
    """Every rank's row of the latest post (after ROWS_DIFFER)."""
    out = np.empty((transport.size, words), dtype=np.int64)
    transport.board.table(out)
    return out
