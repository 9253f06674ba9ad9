"""The PS's own MPI communicator: the one place in ps/ that calls mpi4py.

The collectives move chunks through the Transport seam (collectives/transport/), which is
peer to peer between ranks that all take part. The parameter server speaks a request/reply
protocol instead (protocol.py): a server takes the next request from any worker, replies
out of order, and defers answers. This class is that protocol's transport: pickled headers,
raw payloads, reply tags from request ids, and polling tests, on a communicator of its own
(duplicated from the job's, so no other traffic can match).
"""
from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

from . import protocol
from .protocol import DATA, REQUEST, reply_tags


def _raw(array: np.ndarray) -> list:
    return [np.ascontiguousarray(array).reshape(-1).view(np.uint8), MPI.BYTE]


class Wire:
    def __init__(self, mpi_comm: "MPI.Comm"):
        """Collective over mpi_comm."""
        self.comm = mpi_comm.Dup()
        self.rank = self.comm.Get_rank()

    # -- the worker's side ------------------------------------------------------------------
    def request(self, dest: int, header: dict, payloads=()) -> list:
        """Send a header and its payloads; the requests to wait for before reusing them."""
        sent = [self.comm.isend(header, dest, REQUEST)]
        sent += [self.comm.Isend(_raw(p), dest, DATA) for p in payloads]
        return sent

    def reply_header(self, source: int, rid: int):
        """The pending reply header of request `rid` (completes with the answer dict)."""
        return self.comm.irecv(source=source, tag=reply_tags(rid)[0])

    def reply_payload(self, source: int, rid: int, out: np.ndarray):
        """Receive request `rid`'s reply payload straight into `out`."""
        return self.comm.Irecv(_raw(out), source, reply_tags(rid)[1])

    def goodbye(self, servers: list[int]) -> None:
        MPI.Request.waitall([self.comm.isend({"op": "bye", "rid": 0}, dest, REQUEST)
                             for dest in servers])

    def world_ranks(self, sub: "MPI.Comm") -> list[int]:
        """This wire's rank of each member of `sub`, in sub's order."""
        return MPI.Group.Translate_ranks(sub.Get_group(), list(range(sub.Get_size())),
                                         self.comm.Get_group())

    @staticmethod
    def results(requests: list):
        """(all done?, what each completed request received: a dict for reply headers)."""
        return MPI.Request.testall(requests)

    @staticmethod
    def done(requests: list) -> bool:
        return MPI.Request.Testall(requests)

    # -- the server's side ------------------------------------------------------------------
    def next_request(self):
        """(header, source) of the next request from any worker, or None if none is there."""
        status = MPI.Status()
        message = self.comm.improbe(MPI.ANY_SOURCE, REQUEST, status)
        if message is None:
            return None
        return message.recv(), status.Get_source()

    def payload(self, source: int, nbytes: int, timeout: float, who: str) -> np.ndarray:
        """The next payload from `source` (it follows its header at once)."""
        buf = np.empty(nbytes, dtype=np.uint8)
        request = self.comm.Irecv([buf, MPI.BYTE], source, DATA)
        idler, deadline = protocol.Idler(), time.monotonic() + timeout
        while not request.Test():
            if time.monotonic() > deadline:
                raise protocol.PSTimeout(f"ringps: {who} timed out receiving a payload from "
                                         f"rank {source}")
            idler.idle()
        return buf

    def reply(self, dest: int, rid: int, answer: dict, payload: np.ndarray | None) -> list:
        """Send an answer (and a payload, possibly empty, if the request expects one);
        returns (request, buffer) pairs to keep until they complete."""
        header_tag, data_tag = reply_tags(rid)
        sends = [(self.comm.isend(answer, dest, header_tag), answer)]
        if payload is not None:
            data = _raw(payload)
            sends.append((self.comm.Isend(data, dest, data_tag), data))
        return sends

    def abort(self) -> None:
        self.comm.Abort(1)
