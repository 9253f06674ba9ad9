"""MPI point-to-point transport (mpi4py), the portable one.

Arrays travel as raw bytes (MPI.BYTE), so every dtype, bfloat16 included, moves the same way
and byte counts are exact. All traffic uses one tag on a communicator duplicated for the
library, so MPI's non-overtaking rule keeps segments in posting order and user traffic never
matches ours.

Waiting polls `Testall` instead of blocking in `Waitall`, for two reasons: a timeout can be
raised as an exception naming the peer (a blocked MPI_Waitall cannot be interrupted), and a
waiting rank yields its core (`sched_yield`) once a short spin has not succeeded, which
matters when more ranks than cores share a machine.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
from mpi4py import MPI

from .base import Request, Transport, wire_tag
SPIN_SECONDS = 50e-6


def _bytes(array: np.ndarray):
    return [array.view(np.uint8) if array.dtype != np.uint8 else array, MPI.BYTE]


class MPITransport(Transport):
    def __init__(self, comm: "MPI.Comm", timeout: float):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = timeout

    def isend(self, array, peer, tag=None):
        self._usable()
        return Request(self.comm.Isend(_bytes(array), peer, wire_tag(tag)), "send", peer,
                       array.nbytes)

    def irecv(self, array, peer, tag=None):
        """peer None: from whichever rank sends first (the Request's `source` says who)."""
        self._usable()
        source = MPI.ANY_SOURCE if peer is None else peer
        request = Request(self.comm.Irecv(_bytes(array), source, wire_tag(tag)), "receive",
                          -1 if peer is None else peer, array.nbytes)
        request.source = peer
        return request

    def waitall(self, requests: Sequence[Request]) -> None:
        self._settle(requests, block=True)

    def test(self, requests: Sequence[Request]) -> bool:
        return self._settle(requests, block=False)

    def _settle(self, requests: Sequence[Request], block: bool) -> bool:
        """Complete `requests` (polling until done if `block`); whether all are done."""
        pending = [r for r in requests if not r.done]
        if not pending:
            return True
        handles = [r.handle for r in pending]
        anyone = [i for i, r in enumerate(pending) if r.kind == "receive" and r.source is None]
        statuses = [MPI.Status() for _ in handles] if anyone else None
        if not MPI.Request.Testall(handles, statuses):
            if not block:
                return False
            self._poll(handles, pending, statuses)
        for i in anyone:
            pending[i].source = statuses[i].Get_source()
        for r in pending:
            r.done = True
            if r.on_complete is not None:
                r.on_complete()
        return True

    def _poll(self, handles, pending, statuses=None) -> None:
        start = time.monotonic()
        deadline = start + self.timeout
        spin_until = start + SPIN_SECONDS
        testall = MPI.Request.Testall
        while not testall(handles, statuses):
            now = time.monotonic()
            if now > spin_until:
                os.sched_yield()
            if now > deadline:
                stuck = [r.describe() for r, h in zip(pending, handles) if not h.Test()]
                message = (f"ringps: rank {self.rank} timed out after {self.timeout:g} s waiting "
                           f"to {'; '.join(stuck[:3])}: the peer is dead, hung, or in a "
                           f"different collective")
                raise self._fail(message)

    def exchange(self, values: np.ndarray) -> np.ndarray:
        self._usable()
        values = np.ascontiguousarray(values, dtype=np.int64)
        table = np.empty((self.size, values.size), dtype=np.int64)
        handle = self.comm.Iallgather(values, table)
        self.waitall([Request(handle, "exchange metadata with", -1, values.nbytes)])
        return table

    def describe(self) -> dict:
        """Which MPI library moves the bytes (for benchmark records)."""
        return {"mpi_library": MPI.Get_library_version().strip().splitlines()[0],
                "mpi_standard": "%d.%d" % MPI.Get_version()}

    def barrier(self) -> None:
        self._usable()
        self.waitall([Request(self.comm.Ibarrier(), "meet in a barrier with", -1, 0)])
