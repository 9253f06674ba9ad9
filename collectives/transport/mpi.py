"""MPI point-to-point transport (mpi4py), the portable one.

Arrays travel as raw bytes (MPI.BYTE), so every dtype, bfloat16 included, moves the same way
and byte counts are exact. All traffic uses one tag on a communicator duplicated for the
library, so MPI's non-overtaking rule keeps segments in posting order and user traffic never
matches ours.

Waiting polls `Testall` instead of blocking in `Waitall`, for two reasons: a timeout can be
raised as an exception naming the peer (a blocked MPI_Waitall cannot be interrupted), and a
waiting rank yields its core (`sched_yield`) once a short spin has not succeeded, which
matters when more ranks than cores share a machine. In `exchange` (barriers, metadata: a few
bytes, so the wait is for a late rank, not for bytes) it sleeps in short steps once it has
waited YIELD_SECONDS (base.pause), so ranks idle in a long barrier leave the cores to those
working. Data transfers never sleep: MPI moves a large message only while a rank polls, so a
sleep would stall it between polls. The metadata exchange and barriers are point to point on
their own tag, so a late rank is named; MPI errors (a message longer than
its receive: mismatched calls with the check off) come back naming the ranks.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
from mpi4py import MPI

from .. import watchdog
from .base import Request, Transport, pause, wire_tag

SPIN_SECONDS = 50e-6


def _bytes(array: np.ndarray):
    return [array.view(np.uint8) if array.dtype != np.uint8 else array, MPI.BYTE]


class MPITransport(Transport):
    def __init__(self, comm: "MPI.Comm", timeout: float):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = timeout
        self.live: set = set()      # posted, not yet complete: they own their buffers
        self.abandoned: list = []   # still posted when a wait gave up: kept for ever

    def isend(self, array, peer, tag=None):
        self._usable()
        request = Request(self.comm.Isend(_bytes(array), peer, wire_tag(tag)), "send", peer,
                          array.nbytes)
        self.live.add(request)
        return request

    def irecv(self, array, peer, tag=None):
        """peer None: from whichever rank sends first (the Request's `source` says who)."""
        self._usable()
        source = MPI.ANY_SOURCE if peer is None else peer
        request = Request(self.comm.Irecv(_bytes(array), source, wire_tag(tag)), "receive",
                          -1 if peer is None else peer, array.nbytes)
        request.source = peer
        self.live.add(request)
        return request

    def progress(self) -> None:
        """Let MPI move what is posted (a rank waiting on shared memory must still feed its
        sends to other nodes, or a ring across nodes waits on itself)."""
        self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG)

    def _fail(self, message: str, missing=()):
        """Give up on this communicator without giving its memory back: receives still
        posted are cancelled, and every request still posted keeps its buffer for as long as
        the process lives, so a late peer's bytes can never land in reused memory."""
        self._abandon()
        return super()._fail(message, missing)

    def _abandon(self) -> None:
        for request in self.live:
            if request.kind != "send":
                try:
                    request.handle.Cancel()
                except MPI.Exception:       # already complete or not cancellable
                    pass
        self.abandoned.extend(self.live)
        self.live = set()

    patient = False          # in exchange(): the wait may sleep (see the docstring)

    def waitall(self, requests: Sequence[Request]) -> None:
        self._settle(requests, block=True)

    def exchange(self, values: np.ndarray) -> np.ndarray:
        self.patient = True
        try:
            return super().exchange(values)
        finally:
            self.patient = False

    def test(self, requests: Sequence[Request]) -> bool:
        return self._settle(requests, block=False)

    def _settle(self, requests: Sequence[Request], block: bool) -> bool:
        """Complete `requests` (polling until done if `block`); whether all are done."""
        pending = [r for r in requests if not r.done]
        if not pending:
            return True
        handles = [r.handle for r in pending]
        anyone = [i for i, r in enumerate(pending) if r.kind == "receive" and r.source is None]
        statuses = self._statuses(len(handles))     # sources, and errors (ERR_IN_STATUS)
        try:
            if not MPI.Request.Testall(handles, statuses):
                if not block:
                    return False
                self._poll(handles, pending, statuses)
        except MPI.Exception as exc:
            raise self._mpi_error(exc, pending, statuses) from None
        for i in anyone:
            pending[i].source = statuses[i].Get_source()
        self.live.difference_update(pending)
        for r in pending:
            r.done = True
            if r.on_complete is not None:
                r.on_complete()
        return True

    def _statuses(self, count: int) -> list:
        pool = self.__dict__.setdefault("_status_pool", [])
        while len(pool) < count:
            pool.append(MPI.Status())
        return pool[:count]

    def _poll(self, handles, pending, statuses=None) -> None:
        start = time.monotonic()
        testall = MPI.Request.Testall
        while not testall(handles, statuses):
            now = time.monotonic()
            if self.patient:
                pause(now - start, SPIN_SECONDS)      # a late rank: yield, then sleep
            elif now > start + SPIN_SECONDS:
                os.sched_yield()                      # bytes on the way: keep MPI moving
            self._overdue(start, now, lambda: [r for r, h in zip(pending, handles)
                                               if not h.Test()])

    def _mpi_error(self, exc, pending, statuses) -> Exception:
        """mpi4py's bare 'See the MPI_ERROR field' as a ringps error naming the ranks: a
        message that did not fit is a mismatched call (what the metadata check catches
        when it is on)."""
        from ..errors import MismatchError
        failed = [(r, MPI.Get_error_class(st.Get_error())) for r, st in zip(pending, statuses)
                  if st.Get_error() not in (MPI.SUCCESS, MPI.ERR_PENDING)]
        peers = sorted({r.peer for r, _ in failed if r.peer >= 0}) or \
            sorted({r.peer for r in pending if r.peer >= 0})
        truncated = any(code == MPI.ERR_TRUNCATE for _, code in failed) or \
            exc.Get_error_class() == MPI.ERR_TRUNCATE
        text = MPI.Get_error_string(failed[0][1]) if failed else exc.Get_error_string()
        self.broken = f"MPI error in {self.activity}: {text}"
        self._abandon()
        if truncated:
            return MismatchError(
                f"ringps: rank {self.rank}: {self.activity}: a message from "
                f"{watchdog.ranks(peers)} was longer than this rank expected: the ranks called "
                f"with different lengths or collectives (check=False skips the metadata check "
                f"that names them); MPI said: {text}")
        return RuntimeError(f"ringps: rank {self.rank}: {self.activity}: MPI failed while "
                            f"talking to {watchdog.ranks(peers)}: {text}")

    def describe(self) -> dict:
        """Which MPI library moves the bytes (for benchmark records)."""
        return {"mpi_library": MPI.Get_library_version().strip().splitlines()[0],
                "mpi_standard": "%d.%d" % MPI.Get_version()}
