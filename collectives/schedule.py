"""A communication schedule: which endpoint sends how many bytes to which, step by step.

Every algorithm module describes its own schedule with these nouns, so that topology/ can
price it on any machine and tests can hold the real traffic to it (CountingTransport).
Endpoints are ranks, or names for places that are not ranks ("host": the host-memory
aggregator of d2l's CPU strategy); `placement` says which rank a named endpoint lives on,
and a transfer between an endpoint and the rank it lives on is a local copy, not traffic.
`locations` says where a named endpoint sits on a machine, in topology.model.Topology.place's
words (rank r's device, ("host", r): the host memory of rank r's node, ("spare", k): the
host memory of the k-th node holding no rank), so a parameter server can name its shards
("server", j) and put them on dedicated or colocated hosts.

Two forms of the same thing. `Schedule` lists every Transfer of every step: what tests and
the CountingTransport check hold the algorithms to. `CompactSchedule` says it in patterns,
as the algorithms think of it, so that a 4096-rank ring (33M transfers) is two objects:

    pattern    steps      transfers of step t
    Ring       `steps`    in each group, member i -> member i+1: chunks[(i + first - t) % m]
    Exchange   1          in each group (senders, receivers, nbytes), every sender -> every
                          receiver but itself: nbytes[j] for the j-th receiver
                          (by="receiver") or for the j-th sender (by="sender")
    Together   theirs     patterns of equal step counts in lockstep: step t is all of their
                          steps t (several rings at once, each with its share of the buffer)

`gather`, `scatter` and `exchange` build Exchanges (a gather is an exchange with one
receiver). `expand()` turns a CompactSchedule into the Schedule with the very same
transfers in the same order; topology/compact.py prices the patterns without expanding.
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
    fanout: bool = field(default=False, compare=False)   # the same bytes go to every receiver
                              # of the sender's step (a peer-memory transport stages them once)


@dataclass
class Schedule:
    steps: list[list[Transfer]]
    placement: dict = field(default_factory=dict)     # named endpoint -> rank (accounting)
    locations: dict = field(default_factory=dict)     # named endpoint -> where (topology)

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

    def memory(self, rank: int, transport: str = "shm", resident: bool = False,
               in_place_from: float = float("inf")) -> tuple[int, int]:
        """(bytes read, bytes written) by `rank`'s memory per call to move this schedule
        over `transport` on one node: what the memory roofline (bench/membw.py) divides by
        the copy bandwidth. Local work an algorithm does beyond its transfers (oneshot's
        final copy) is not counted, so the bound is optimistic there. `resident`: buffers
        from collectives.empty; `in_place_from`: transfers this large are read from the
        sender's private memory (cross-memory attach), so neither is staged.

            endpoint        shm (peer memory)                   mpi (MPICH: cell in, cell out)
            sender          copy into its segment: r b, w b     copy into a cell: r b, w b
                            (no copy for a resident buffer;     (one per receiver)
                            a fanout send: once per step)
            receiver        copy from the peer: r b, w b        copy out of the cell: r b, w b
                            reduce from the peer: r 2b, w b     then reduce: + r 2b, w b
            local transfer  (an endpoint on its own rank): a copy, r b, w b
        """
        read = write = 0
        for step in self.steps:
            staged = set()
            for t in step:
                src, dst = self._rank_of(t.src), self._rank_of(t.dst)
                b = t.nbytes
                if src == dst:
                    if src == rank:
                        read, write = read + b, write + b
                    continue
                in_place = transport == "shm" and (resident or b >= in_place_from)
                if src == rank and not in_place:
                    key = (t.src, b) if t.fanout and transport == "shm" else id(t)
                    if key not in staged:
                        staged.add(key)
                        read, write = read + b, write + b
                if dst == rank:
                    if transport == "mpi":
                        read, write = read + b, write + b
                    read, write = read + (2 * b if t.reduce else b), write + b
        return read, write

    def __add__(self, other: "Schedule") -> "Schedule":
        return Schedule(self.steps + other.steps, {**self.placement, **other.placement},
                        {**self.locations, **other.locations})


def chunk_nbytes(count: int, parts: int, itemsize: int) -> list[int]:
    return [(b - a) * itemsize for a, b in chunk_bounds(count, parts)]


# ---- compact form -----------------------------------------------------------------------

@dataclass(frozen=True)
class Ring:
    """`steps` steps around rings of equal length m, all in lockstep: at step t member i of
    every group sends chunks[(i + first - t) % m] to member (i + 1) % m of its group.
    A ring reduce-scatter is first=-1 with reduce, its all-gather first=0."""
    groups: tuple[tuple, ...]
    chunks: tuple[int, ...]
    steps: int
    first: int = 0
    reduce: bool = False

    def __post_init__(self):
        if any(len(g) != len(self.chunks) for g in self.groups):
            raise ValueError("Ring: every group needs one chunk size per member")
        if self.steps < 0:
            raise ValueError(f"Ring: steps must be >= 0, got {self.steps}")

    @property
    def step_count(self) -> int:
        return self.steps

    def expand(self):
        m = len(self.chunks)
        for t in range(self.steps):
            yield [Transfer(g[i], g[(i + 1) % m], self.chunks[(i + self.first - t) % m],
                            self.reduce) for g in self.groups for i in range(m)]


@dataclass(frozen=True)
class Exchange:
    """One step in which, in every group (senders, receivers, nbytes), each sender sends to
    each receiver other than itself: nbytes[j] bytes for the j-th receiver (by="receiver":
    a direct reduce-scatter, a gather, a push to sharded servers) or for the j-th sender
    (by="sender": a direct all-gather, a scatter, a pull). Groups run at once and may
    share endpoints (every node's rank j pushing its chunk j to the same servers)."""
    groups: tuple[tuple[tuple, tuple, tuple], ...]
    by: str = "receiver"
    reduce: bool = False

    def __post_init__(self):
        if self.by not in ("receiver", "sender"):
            raise ValueError(f"Exchange: by must be 'receiver' or 'sender', got {self.by!r}")
        side = 1 if self.by == "receiver" else 0
        if any(len(g[side]) != len(g[2]) for g in self.groups):
            raise ValueError(f"Exchange: every group needs one size per {self.by}")

    @property
    def step_count(self) -> int:
        return 1

    def expand(self):
        by_receiver = self.by == "receiver"
        step = []
        for senders, receivers, nbytes in self.groups:
            for i, s in enumerate(senders):
                step += [Transfer(s, d, nbytes[j] if by_receiver else nbytes[i], self.reduce,
                                  fanout=not by_receiver)
                         for j, d in enumerate(receivers) if d != s]
        yield step


@dataclass(frozen=True)
class Together:
    """Patterns with the same number of steps, run in lockstep: step t moves every one of
    their transfers of step t (the rings of a multi-ring layout, each carrying its part)."""
    parts: tuple

    def __post_init__(self):
        if len({p.step_count for p in self.parts}) > 1:
            raise ValueError("Together: every pattern needs the same number of steps")

    @property
    def step_count(self) -> int:
        return self.parts[0].step_count if self.parts else 0

    def expand(self):
        for steps in zip(*(p.expand() for p in self.parts)):
            yield [t for step in steps for t in step]


def ring(members, chunks, steps: int, first: int = 0, reduce: bool = False) -> Ring:
    return Ring((tuple(members),), tuple(chunks), steps, first, reduce)


def exchange(senders, receivers, nbytes, by: str = "receiver", reduce: bool = False) -> Exchange:
    return Exchange(((tuple(senders), tuple(receivers), tuple(nbytes)),), by, reduce)


def gather(senders, endpoint, nbytes: int, reduce: bool = False) -> Exchange:
    """Every sender (but the endpoint itself) -> endpoint, nbytes each."""
    return exchange(senders, (endpoint,), (nbytes,), "receiver", reduce)


def scatter(endpoint, receivers, nbytes: int) -> Exchange:
    """endpoint -> every receiver (but itself), nbytes each."""
    return exchange((endpoint,), receivers, (nbytes,), "sender")


@dataclass
class CompactSchedule:
    """A schedule as patterns (Ring, Exchange), each one or more steps, run one after
    another; placement and locations as in Schedule."""
    patterns: list
    placement: dict = field(default_factory=dict)
    locations: dict = field(default_factory=dict)

    @property
    def step_count(self) -> int:
        return sum(p.step_count for p in self.patterns)

    def expand(self) -> Schedule:
        return Schedule([step for p in self.patterns for step in p.expand()],
                        dict(self.placement), dict(self.locations))

    def __add__(self, other: "CompactSchedule") -> "CompactSchedule":
        return CompactSchedule(self.patterns + other.patterns,
                               {**self.placement, **other.placement},
                               {**self.locations, **other.locations})
