"""The transport seam.

A transport moves contiguous numpy arrays between ranks of one communicator. Everything is
nonblocking and returns a Request; `waitall` completes them. `irecv_reduce` is the seam a
peer-memory transport (shared memory, CUDA IPC) uses to reduce straight from the peer's
buffer: over MPI it is a receive into scratch followed by a local combine, run when the
request completes. A wait that exceeds the communicator's timeout raises PeerTimeout naming
this rank and the peer it was waiting for, instead of hanging.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


class PeerTimeout(TimeoutError):
    """A peer did not send or receive within the timeout (dead, hung, or in another call)."""


class Request:
    """One pending transfer. `on_complete` runs once, after the bytes have arrived."""

    __slots__ = ("handle", "kind", "peer", "nbytes", "on_complete", "done", "source")

    def __init__(self, handle, kind: str, peer: int, nbytes: int,
                 on_complete: Callable[[], None] | None = None):
        self.handle = handle
        self.kind = kind
        self.peer = peer
        self.nbytes = nbytes
        self.on_complete = on_complete
        self.done = False
        self.source = peer          # for a receive from any rank: who sent, once complete

    def describe(self) -> str:
        if self.peer < 0:
            return f"{self.kind} the other ranks"
        return f"{self.kind} {self.nbytes} bytes {'to' if self.kind == 'send' else 'from'} rank {self.peer}"


TAG = 7                 # every collective's traffic
USER_TAG_BASE = 1000    # user point-to-point tags (torch send/recv) start here


def wire_tag(tag: int | None) -> int:
    return TAG if tag is None else USER_TAG_BASE + tag


class Transport:
    """Point-to-point moves between the ranks of one communicator."""

    rank: int
    size: int
    broken: str | None = None       # why this transport can no longer be trusted

    def _usable(self) -> None:
        if self.broken:
            raise PeerTimeout(f"ringps: rank {self.rank}: this communicator is unusable after "
                              f"an earlier failure ({self.broken}); create a new one")

    def _fail(self, message: str) -> PeerTimeout:
        """Mark this transport unusable (receives may still be posted; a late peer's messages
        would match the next call) and return the error to raise."""
        self.broken = message.removeprefix("ringps: ")
        return PeerTimeout(message)

    def isend(self, array: np.ndarray, peer: int, tag: int | None = None) -> Request:
        """tag None: collective traffic; an int: a user's point-to-point channel."""
        raise NotImplementedError

    def irecv(self, array: np.ndarray, peer: int, tag: int | None = None) -> Request:
        raise NotImplementedError

    def isend_many(self, array: np.ndarray, peers: Sequence[int]) -> list[Request]:
        """The same collective send to each of `peers` (a peer-memory transport stages the
        bytes once and lets every peer read them)."""
        return [self.isend(array, peer) for peer in peers]

    def irecv_reduce(self, dst: np.ndarray, peer: int, scratch: np.ndarray,
                     combine: Callable[[np.ndarray, np.ndarray], None]) -> Request:
        """Receive len(dst) elements from `peer` and, on completion, combine(dst, received)."""
        req = self.irecv(scratch, peer)
        req.on_complete = lambda: combine(dst, scratch)
        return req

    def waitall(self, requests: Sequence[Request]) -> None:
        raise NotImplementedError

    def test(self, requests: Sequence[Request]) -> bool:
        """Complete what has arrived without blocking; whether every request is done."""
        raise NotImplementedError

    def wait(self, request: Request) -> None:
        self.waitall((request,))

    def sendrecv(self, send: np.ndarray, dst: int, recv: np.ndarray, src: int) -> None:
        self.waitall((self.irecv(recv, src), self.isend(send, dst)))

    def exchange(self, values: np.ndarray) -> np.ndarray:
        """Allgather a small int64 vector from every rank: the control plane (metadata checks)."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict:
        """What carries the bytes (library, version), for benchmark records."""
        return {}
