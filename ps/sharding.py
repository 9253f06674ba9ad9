"""Which server shard holds which block of which key.

A key's value is cut into blocks (rows of a 2-D table, or a flat range), at most
`block_bytes` each (BytePS uses 4 MB), so one big tensor spreads over every shard and no
message is huge. A *slicer* then places each block on a server. Two ship:

- `KeyRangeSlicer` (ps-lite): the 64-bit key space is cut into S equal ranges and a block
  lives where its position (hash of the key, plus the block index) falls. Cheap and
  order-preserving, but adding a server moves every range boundary: about half the blocks move.
- `ConsistentHashSlicer` (the seed's scheme): every server owns `vnodes` points on a hash
  ring and a block goes to the first server clockwise of its own hash, so adding or
  removing a server moves only the blocks next to its points (about 1/N of them). Random
  placement of a few hundred blocks of very different sizes is lumpy, so placement also
  bounds each server's load at (1 + load_bound) x the mean ("consistent hashing with bounded
  loads", Mirrokni et al. 2018): a block passes over a full server to the next one on the ring.

Placement is deterministic (a hash of names, never Python's salted `hash`), so every
worker computes the same map without talking. A batch of blocks (`kv.init` of a dict) is
placed largest first, which is what keeps the bound tight; blocks placed earlier never move.
"""
from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass

DEFAULT_BLOCK_BYTES = 4 << 20
KEY_SPACE = 1 << 64


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Block:
    key: str            # the key's name (ints are named by their decimal string)
    index: int          # block number within the key
    start: int          # first row (2-D keys) or element (flat keys) of the block
    stop: int
    nbytes: int

    @property
    def name(self) -> str:
        return f"{self.key}/{self.index}"


def split(key: str, rows: int, row_bytes: int, block_bytes: int = DEFAULT_BLOCK_BYTES
          ) -> list[Block]:
    """Blocks of whole rows, each at most `block_bytes` (but at least one row); an empty
    value is one empty block, so every key lives somewhere."""
    if block_bytes < 1:
        raise ValueError(f"ringps: block_bytes must be >= 1, got {block_bytes}")
    per = max(1, block_bytes // max(1, row_bytes))
    count = max(1, math.ceil(rows / per))
    return [Block(key, i, i * per, min(rows, (i + 1) * per),
                  (min(rows, (i + 1) * per) - i * per) * row_bytes) for i in range(count)]


class Slicer:
    """Places blocks on servers 0..servers-1; `loads` is the bytes placed so far per server."""

    name = "?"

    def __init__(self, servers: int):
        if servers < 1:
            raise ValueError(f"ringps: a slicer needs at least one server, got {servers}")
        self.servers = servers
        self.loads = [0] * servers

    def place(self, blocks: list[Block]) -> dict[str, int]:
        """Server of each block (by block name), for a batch placed together."""
        placed = {}
        for block in blocks:
            server = self._choose(block, blocks)
            self.loads[server] += block.nbytes
            placed[block.name] = server
        return placed

    def _choose(self, block: Block, batch: list[Block]) -> int:
        raise NotImplementedError


class KeyRangeSlicer(Slicer):
    """ps-lite's ranges: server s owns positions [s, s+1) x 2^64 / S."""

    name = "range"

    def _choose(self, block, batch):
        position = (hash64(block.key) + block.index) % KEY_SPACE
        return position * self.servers // KEY_SPACE


class ConsistentHashSlicer(Slicer):
    """A hash ring with `vnodes` points per server, and a load bound (None: plain hashing)."""

    name = "hash"

    def __init__(self, servers: int, vnodes: int = 64, load_bound: float | None = 0.08):
        super().__init__(servers)
        if vnodes < 1:
            raise ValueError(f"ringps: vnodes must be >= 1, got {vnodes}")
        points = sorted((hash64(f"server{s}#{v}"), s) for s in range(servers)
                        for v in range(vnodes))
        self._points = [p for p, _ in points]
        self._owners = [s for _, s in points]
        self.load_bound = load_bound

    def clockwise(self, name: str):
        """Distinct servers in ring order from the block's hash onwards."""
        start = bisect.bisect(self._points, hash64(name))
        seen: set[int] = set()
        for i in range(len(self._points)):
            server = self._owners[(start + i) % len(self._points)]
            if server not in seen:
                seen.add(server)
                yield server
                if len(seen) == self.servers:
                    return

    def place(self, blocks):
        ordered = sorted(blocks, key=lambda b: (-b.nbytes, hash64(b.name)))
        self._capacity = math.inf
        if self.load_bound is not None:
            total = sum(self.loads) + sum(b.nbytes for b in blocks)
            self._capacity = (1 + self.load_bound) * total / self.servers
        placed = super().place(ordered)
        return {b.name: placed[b.name] for b in blocks}

    def _choose(self, block, batch):
        for server in self.clockwise(block.name):
            if self.loads[server] + block.nbytes <= self._capacity:
                return server
        return min(range(self.servers), key=lambda s: (self.loads[s], s))


SLICERS = {"hash": ConsistentHashSlicer, "range": KeyRangeSlicer}


def make_slicer(spec, servers: int) -> Slicer:
    """A Slicer from a name ("hash", "range") or a Slicer class / factory taking `servers`."""
    if isinstance(spec, str):
        if spec not in SLICERS:
            raise ValueError(f"ringps: unknown slicer {spec!r} (known: {', '.join(SLICERS)})")
        return SLICERS[spec](servers)
    return spec(servers)
