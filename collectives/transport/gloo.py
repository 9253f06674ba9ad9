"""Transport over a torch gloo process group, for jobs torchrun started (no MPI world).

Arrays travel as bytes (uint8 tensors sharing the arrays' memory), so every dtype moves the
same way. Collective traffic uses one tag and user point-to-point traffic starts at
USER_TAG_BASE, as in the MPI transport; gloo keeps messages of one (peer, tag) in order.
A wait that passes half the deadline gives the stall warning (from a timer: gloo's waits
block) and one past it names the peer it waited for; the store is checked for a peer that
ended the job; an error gloo reports before the deadline (a peer's connection reset) is
reported as the peer's failure, not as a timeout.
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Sequence

import numpy as np
import torch

from .. import watchdog
from .base import Request, Transport, wire_tag


def _bytes(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.reshape(-1).view(np.uint8))


class GlooTransport(Transport):
    def __init__(self, pg, timeout: float, store=None):
        self.pg = pg
        self.store = store
        self.rank, self.size = pg.rank(), pg.size()
        self.timeout = timeout

    def isend(self, array, peer, tag=None):
        self._usable()
        return Request(self.pg.send([_bytes(array)], peer, wire_tag(tag)), "send", peer,
                       array.nbytes)

    def irecv(self, array, peer, tag=None):
        self._usable()
        tag = wire_tag(tag)
        buffer = [_bytes(array)]
        if peer is None:
            work = self.pg.recv_anysource(buffer, tag)
            request = Request(work, "receive", -1, array.nbytes)
            request.source = None
            return request
        return Request(self.pg.recv(buffer, peer, tag), "receive", peer, array.nbytes)

    def waitall(self, requests: Sequence[Request]) -> None:
        """Blocking waits, in order (gloo's send/recv works only complete inside wait()); the
        first that runs past the deadline names its peer, the one not heard from."""
        start = time.monotonic()
        for r in requests:
            if r.done:
                continue
            left = start + self.timeout - time.monotonic()
            stall = threading.Timer(max(start + self.timeout / 2 + 0.01 - time.monotonic(), 0),
                                    lambda r=r: self._overdue(start, time.monotonic(),
                                                              lambda: [r]))
            stall.daemon = True
            stall.start()
            try:
                self._peer_ended_job()
                r.handle.wait(timedelta(seconds=max(left, 0.001)))
            except RuntimeError as exc:
                waited = time.monotonic() - start
                self._peer_ended_job()      # a rank that ended the job said why before it went
                if waited < self.timeout:   # gloo reports a peer's failure (connection reset)
                    raise self._fail(f"ringps: rank {self.rank} failed after {waited:.1f} s in "
                                     f"{self.activity}, waiting to {r.describe()}: the peer's "
                                     f"side reported an error (its process ended or closed the "
                                     f"connection): {exc}", r.awaited()) from None
                raise watchdog.failed(self._fail(
                    f"ringps: rank {self.rank} timed out after {self.timeout:g} s in "
                    f"{self.activity}, waiting to {r.describe()}; not heard from: rank {r.peer} "
                    f"(dead, hung, or in a different collective)", r.awaited())) from None
            finally:
                stall.cancel()
            if r.source is None:
                r.source = r.handle._source_rank()
            r.done = True
            if r.on_complete is not None:
                r.on_complete()

    def _peer_ended_job(self) -> None:
        """The store-based abort: a rank that ends a torchrun job leaves its reason in the
        store (watchdog.py); the others stop waiting at once and say who ended it."""
        if self.store is None:
            return
        reason = watchdog.abort_reason(self.store)
        if reason:
            raise self._fail(f"ringps: rank {self.rank}: {self.activity} stopped: {reason}")

    def test(self, requests: Sequence[Request]) -> bool:
        if all(r.done or r.handle.is_completed() for r in requests):
            self.waitall(requests)
            return True
        return False

    def describe(self) -> dict:
        return {"transport": "gloo (torch.distributed)", "torch": torch.__version__}
