"""Transport over a torch gloo process group, for jobs torchrun started (no MPI world).

Arrays travel as bytes (uint8 tensors sharing the arrays' memory), so every dtype moves the
same way. Collective traffic uses one tag and user point-to-point traffic starts at
USER_TAG_BASE, as in the MPI transport; gloo keeps messages of one (peer, tag) in order.
"""
from __future__ import annotations

import time
from datetime import timedelta
from typing import Sequence

import numpy as np
import torch

from .base import Request, Transport, wire_tag


def _bytes(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.reshape(-1).view(np.uint8))


class GlooTransport(Transport):
    def __init__(self, pg, timeout: float):
        self.pg = pg
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
        deadline = time.monotonic() + self.timeout
        for r in requests:
            if r.done:
                continue
            left = max(deadline - time.monotonic(), 0.001)
            try:
                r.handle.wait(timedelta(seconds=left))
            except RuntimeError as exc:
                raise self._fail(f"ringps: rank {self.rank} timed out or failed after "
                                 f"{self.timeout:g} s waiting to {r.describe()}: {exc}") from None
            if r.source is None:
                r.source = r.handle._source_rank()
            r.done = True
            if r.on_complete is not None:
                r.on_complete()

    def test(self, requests: Sequence[Request]) -> bool:
        if all(r.done or r.handle.is_completed() for r in requests):
            self.waitall(requests)
            return True
        return False

    def exchange(self, values: np.ndarray) -> np.ndarray:
        self._usable()
        mine = torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64))
        table = [torch.empty_like(mine) for _ in range(self.size)]
        self.pg.allgather([table], [mine]).wait(timedelta(seconds=self.timeout))
        return torch.stack(table).numpy()

    def barrier(self) -> None:
        self._usable()
        self.pg.barrier().wait(timedelta(seconds=self.timeout))

    def describe(self) -> dict:
        return {"transport": "gloo (torch.distributed)", "torch": torch.__version__}
