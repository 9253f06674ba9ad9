"""A transport wrapper that counts bytes per peer, so tests can hold an algorithm to its
documented schedule (e.g. the ring sends exactly 2(n-1)/n of the buffer per rank)."""
from __future__ import annotations

from collections import Counter

from .base import Transport


class CountingTransport(Transport):
    def __init__(self, inner: Transport):
        self.inner = inner
        self.rank, self.size = inner.rank, inner.size
        self.sent = Counter()       # peer -> bytes
        self.received = Counter()
        self.messages = 0

    @property
    def bytes_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def bytes_received(self) -> int:
        return sum(self.received.values())

    def reset(self) -> None:
        self.sent.clear()
        self.received.clear()
        self.messages = 0

    def isend(self, array, peer, tag=None):
        self.sent[peer] += array.nbytes
        self.messages += 1
        return self.inner.isend(array, peer, tag)

    def isend_many(self, array, peers):
        for peer in peers:
            self.sent[peer] += array.nbytes
        self.messages += len(peers)
        return self.inner.isend_many(array, peers)

    def irecv(self, array, peer, tag=None):
        self.received[peer] += array.nbytes
        return self.inner.irecv(array, peer, tag)

    def irecv_reduce(self, dst, peer, scratch, combine):
        self.received[peer] += dst.nbytes
        return self.inner.irecv_reduce(dst, peer, scratch, combine)

    def waitall(self, requests):
        self.inner.waitall(requests)

    def test(self, requests):
        return self.inner.test(requests)

    def begin(self, collective, detail=""):
        self.inner.begin(collective, detail)
        self.calls, self.doing = self.inner.calls, self.inner.doing

    def exchange(self, values):
        return self.inner.exchange(values)

    def barrier(self):
        self.inner.barrier()

    def describe(self):
        return self.inner.describe()
