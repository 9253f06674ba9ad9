"""The transport seam.

A transport moves contiguous numpy arrays between ranks of one communicator. Everything is
nonblocking and returns a Request; `waitall` completes them. `irecv_reduce` is the seam a
peer-memory transport (shared memory, CUDA IPC) uses to reduce straight from the peer's
buffer: over MPI it is a receive into scratch followed by a local combine, run when the
request completes. A wait that exceeds the communicator's timeout raises PeerTimeout naming
this rank, the collective and its sequence number (`begin`), and the peers not heard from,
instead of hanging; at half the timeout a stall warning names them first (watchdog.py).
The metadata exchange and barriers are point to point on a tag of their own, so a wait
knows exactly which ranks have not yet arrived.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from .. import watchdog


class PeerTimeout(TimeoutError):
    """A peer did not send or receive within the timeout (dead, hung, or in another call).
    `missing`: the ranks not heard from; `activity`: the collective and its number."""

    def __init__(self, message: str, *, missing=(), activity: str = ""):
        super().__init__(message)
        self.missing = sorted(set(missing))
        self.activity = activity


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
        if self.kind not in ("send", "receive"):
            return f"{self.kind} rank {self.peer}"
        return f"{self.kind} {self.nbytes} bytes {'to' if self.kind == 'send' else 'from'} rank {self.peer}"

    def awaited(self) -> list[int]:
        """The ranks this transfer still waits for."""
        return [self.peer] if self.peer >= 0 else []


TAG = 7                 # every collective's traffic
CONTROL_TAG = 6         # the metadata exchange and barriers
CONTROL = -1            # `tag=CONTROL` asks for CONTROL_TAG
USER_TAG_BASE = 1000    # user point-to-point tags (torch send/recv) start here
CLOSED = "it was closed"  # `broken` of a transport whose Communicator was closed
YIELD_SECONDS = 2e-3      # a wait without progress this long stops yielding and sleeps


def pause(waited: float, spin: float) -> None:
    """One back-off step of a wait that has made no progress for `waited` seconds: keep
    spinning under `spin`, then yield the core, and past YIELD_SECONDS sleep 50 us plus 1%
    of the wait (at most 1 ms), so that ranks outnumbering the cores, and ranks idle in a
    long barrier, leave the cores to the ranks that are working."""
    if waited > YIELD_SECONDS:
        time.sleep(min(1e-3, 5e-5 + waited / 100))
    elif waited > spin:
        os.sched_yield()


def spin_budget(node_ranks: int, spin: float) -> float:
    """How long a wait spins before it yields: `spin`, or 0 where this node's ranks outnumber
    the cores this process may run on (a peer that is not running cannot make progress until
    someone gives up a core; measured on 2 cores, 3-5 ranks: a 20 us spin made a small
    allreduce 3-5x slower than yielding at once)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return spin if node_ranks <= cores else 0.0


def wire_tag(tag: int | None) -> int:
    if tag is None:
        return TAG
    return CONTROL_TAG if tag == CONTROL else USER_TAG_BASE + tag


class Transport:
    """Point-to-point moves between the ranks of one communicator."""

    rank: int
    size: int
    timeout: float
    broken: str | None = None       # why this transport can no longer be trusted
    calls = 0                       # collectives begun on this communicator
    doing = ("a collective", "")    # the latest one's name and detail (text, or a function
    warned = 0                      # giving it: formatted only when a message needs it)

    def begin(self, collective: str, detail="") -> None:
        """Number the next collective, for stall warnings and timeouts."""
        if self.broken:
            self._usable()
        self.calls += 1
        self.doing = (collective, detail)

    @property
    def activity(self) -> str:
        """The latest collective as messages name it: "allreduce #17 (ring, 1024 float32)"."""
        collective, detail = self.doing
        if not self.calls:
            return collective
        detail = detail() if callable(detail) else detail
        return f"{collective} #{self.calls}" + (f" ({detail})" if detail else "")

    def _usable(self) -> None:
        if self.broken:
            if self.broken == CLOSED:
                raise RuntimeError(f"ringps: rank {self.rank}: this communicator was closed "
                                   f"(Communicator.close, or its torch group destroyed)")
            raise PeerTimeout(f"ringps: rank {self.rank}: this communicator is unusable after "
                              f"an earlier failure ({self.broken}); create a new one")

    def _fail(self, message: str, missing=()) -> PeerTimeout:
        """Mark this transport unusable (receives may still be posted; a late peer's messages
        would match the next call) and return the error to raise."""
        self.broken = message.removeprefix("ringps: ")
        return PeerTimeout(message, missing=missing, activity=self.activity)

    def _overdue(self, start: float, now: float, stuck: Callable[[], list]) -> None:
        """Called by every polling wait: a stall warning once per collective past half the
        timeout, PeerTimeout past it. `stuck()` lists the requests still pending (each with
        describe() and awaited())."""
        waited = now - start
        if waited <= self.timeout / 2:
            return
        if waited <= self.timeout and self.warned == self.calls:
            return
        pending = stuck()
        missing = sorted({p for r in pending for p in r.awaited()})
        what = "; ".join(r.describe() for r in pending[:3]) + \
            (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
        if waited > self.timeout:
            raise watchdog.failed(self._fail(
                f"ringps: rank {self.rank} timed out after {self.timeout:g} s in "
                f"{self.activity}, waiting to {what}; not heard from: "
                f"{watchdog.ranks(missing)} (dead, hung, or in a different collective)",
                missing))
        self.warned = self.calls
        watchdog.stalled(f"ringps: rank {self.rank}: {self.activity} has waited {waited:.1f} s "
                         f"to {what}; not heard from: {watchdog.ranks(missing)} (timeout in "
                         f"{self.timeout - waited:.1f} s)")

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

    def progress(self) -> None:
        """Move what is posted without waiting for anything (for a wrapping transport that
        waits on its own transfers while ours are in flight)."""

    def wait(self, request: Request) -> None:
        self.waitall((request,))

    def sendrecv(self, send: np.ndarray, dst: int, recv: np.ndarray, src: int) -> None:
        self.waitall((self.irecv(recv, src), self.isend(send, dst)))

    def exchange(self, values: np.ndarray) -> np.ndarray:
        """Allgather a small int64 vector from every rank: the control plane (metadata checks).
        Point to point, so that a wait names exactly the ranks whose rows have not come."""
        self._usable()
        values = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
        table = np.empty((self.size, values.size), dtype=np.int64)
        table[self.rank] = values
        peers = [p for p in range(self.size) if p != self.rank]
        receives = [self.irecv(table[p], p, CONTROL) for p in peers]
        sends = [self.isend(values, p, CONTROL) for p in peers]
        for r in receives:
            r.kind = "exchange metadata with"
        self.waitall(receives + sends)
        return table

    def barrier(self) -> None:
        """Every rank arrives before any leaves; a wait names the ranks not arrived."""
        self.exchange(np.zeros(1, dtype=np.int64))

    def describe(self) -> dict:
        """What carries the bytes (library, version), for benchmark records."""
        return {}
