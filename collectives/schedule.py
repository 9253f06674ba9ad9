"""A communication schedule: which endpoint sends how many bytes to which, step by step.

Every algorithm module describes its own schedule with these nouns, so that topology/ can
price it on any machine and tests can hold the real traffic to it (CountingTransport).
Endpoints are ranks, or names for places that are not ranks ("host": the host-memory
aggregator of d2l's CPU strategy); `placement` says which rank a named endpoint lives on,
and a transfer between an endpoint and the rank it lives on is a local copy, not traffic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .partition import chunk_bounds


@dataclass(frozen=True)
class Transfer:
    src: int | str
    dst: int | str
    nbytes: int
    reduce: bool = False      # the receiver reduces what arrives into its buffer


@dataclass
class Schedule:
    steps: list[list[Transfer]]
    placement: dict[str, int] = field(default_factory=dict)

    def _rank_of(self, endpoint) -> int:
        return self.placement.get(endpoint, endpoint)

    def _moves(self):
        for step in self.steps:
            for t in step:
                if self._rank_of(t.src) != self._rank_of(t.dst):
                    yield t

    def bytes_sent(self, rank: int) -> int:
        """Bytes `rank` puts on the wire (local copies excluded)."""
        return sum(t.nbytes for t in self._moves() if self._rank_of(t.src) == rank)

    def bytes_received(self, rank: int) -> int:
        return sum(t.nbytes for t in self._moves() if self._rank_of(t.dst) == rank)

    def __add__(self, other: "Schedule") -> "Schedule":
        return Schedule(self.steps + other.steps, {**self.placement, **other.placement})


def chunk_nbytes(count: int, parts: int, itemsize: int) -> list[int]:
    return [(b - a) * itemsize for a, b in chunk_bounds(count, parts)]
