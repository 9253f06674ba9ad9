"""Communicator: the ranks of a job, how they group into nodes, and what role each plays.

It wraps an mpi4py communicator (COMM_WORLD by default), duplicated so that library traffic
never meets the caller's. From it come

- `node`: the ranks on my node (from MPI_Comm_split_type(SHARED), or `ranks_per_node`
  consecutive ranks per pretend node, so one machine can stand in for several);
- `leaders`: one rank per node (local rank 0), None on the other ranks;
- roles for the parameter server: with `servers=S`, S ranks are server shards
  (`placement="dedicated"`: the last S ranks; `"per-node"`: the last local rank of each of
  the last S nodes) and `workers` is a communicator of the rest (None on servers);
- `rings`: the ring layout `ring` allreduces over (rings.py: `rings=` or RINGPS_RINGS, one
  ring in rank order by default), agreed by every rank when the communicator is made;
- `transport`: shared memory between the ranks of a node and MPI across nodes (`auto`, the
  default), or `mpi` / `shm` (`transport=` or RINGPS_TRANSPORT; transport/__init__.py).

Sub-communicators are Communicators too, so every algorithm runs on any of them.

`close()` (or leaving a `with` block) gives back what the communicator holds: its shared
segments and its MPI communicators (MPICH has 2048 per process; torch's destroy_process_group
closes the group's). A closed communicator refuses further calls. Collection alone releases
the segments but not the MPI communicators, as with mpi4py's own.
"""
from __future__ import annotations

import json
import os

import numpy as np
from mpi4py import MPI

from . import watchdog
from .rings import LayoutError, RingLayout
from .transport import chosen, select
from .transport.base import CLOSED
from .transport.mpi import MPITransport

DEFAULT_TIMEOUT = watchdog.DEFAULT_TIMEOUT


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _pending_requests(transport) -> bool:
    """Whether MPI may still write into buffers of this transport (requests posted and not
    complete, or abandoned after a failure)."""
    inner = getattr(transport, "inner", transport)
    return bool(getattr(inner, "live", None) or getattr(inner, "abandoned", None))


def _allgather_json(mpi_comm, value) -> list:
    """Every rank's `value` (lists, strings, numbers), as JSON bytes: nothing another process
    sends is ever unpickled."""
    mine = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
    sizes = np.empty(mpi_comm.Get_size(), dtype=np.int64)
    mpi_comm.Allgather(np.array([mine.size], dtype=np.int64), sizes)
    table = np.empty(int(sizes.sum()), dtype=np.uint8)
    mpi_comm.Allgatherv(mine, [table, sizes.tolist()])
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [json.loads(table[a:b].tobytes()) for a, b in zip(bounds[:-1], bounds[1:])]


def assign_servers(node_of_rank: list[int], servers: int, placement: str) -> list[int]:
    """Ranks that act as server shards, by placement policy."""
    size = len(node_of_rank)
    if not 0 < servers < size:
        raise ValueError(f"ringps: servers={servers} must leave at least one worker among "
                         f"{size} ranks")
    if placement == "dedicated":
        return list(range(size - servers, size))
    if placement == "per-node":
        last_of_node = {node: rank for rank, node in enumerate(node_of_rank)}
        nodes = sorted(last_of_node)
        if servers > len(nodes):
            raise ValueError(f"ringps: placement='per-node' puts one server per node, but "
                             f"servers={servers} > {len(nodes)} nodes")
        return sorted(last_of_node[n] for n in nodes[len(nodes) - servers:])
    raise ValueError(f"ringps: unknown server placement {placement!r} "
                     f"(known: 'dedicated', 'per-node')")


class Communicator:
    def __init__(self, mpi_comm: "MPI.Comm | None" = None, *, ranks_per_node: int | None = None,
                 servers: int | None = None, placement: str = "dedicated",
                 timeout: float | None = None, rings: "str | RingLayout | None" = None,
                 transport: str | None = None, _node_of_rank: list[int] | None = None,
                 _adopt: bool = False):
        watchdog.mode()                     # a bad RINGPS_ON_TIMEOUT fails here, on every rank
        watchdog.install()
        base = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.mpi = base if _adopt else base.Dup()    # _adopt: a Split result made for us
        self.rank = self.mpi.Get_rank()
        self.size = self.mpi.Get_size()
        if timeout is None:
            timeout = watchdog.default_timeout()
        self.timeout = timeout
        self.transport_choice = chosen(transport)
        self.transport = MPITransport(self.mpi, timeout)

        if ranks_per_node is None:
            ranks_per_node = _env_int("RINGPS_RANKS_PER_NODE")
        self.ranks_per_node = ranks_per_node
        nodes = _node_of_rank or self._discover_nodes(ranks_per_node)
        renumber = {node: i for i, node in enumerate(sorted(set(nodes)))}
        self.node_of_rank = [renumber[node] for node in nodes]
        self.node_index = self.node_of_rank[self.rank]
        self.num_nodes = len(set(self.node_of_rank))
        local = [r for r in range(self.size) if self.node_of_rank[r] == self.node_index]
        self.local_rank, self.local_size = local.index(self.rank), len(local)
        # shared memory between the ranks of a node, MPI across (transport/__init__.py)
        self.transport = select(self.transport, self.node_of_rank, self.transport_choice)

        if servers is None:
            servers = _env_int("RINGPS_SERVERS") or 0
        self.server_ranks = assign_servers(self.node_of_rank, servers, placement) if servers else []
        self.role = "server" if self.rank in self.server_ranks else "worker"
        self.worker_ranks = [r for r in range(self.size) if r not in self.server_ranks]

        # Sub-communicators are built here, by every rank together (Split is collective), never
        # lazily on first use, where only some ranks would arrive. Each level is smaller or
        # flatter than the one above, so the recursion ends at communicators that are their
        # own node and their own leaders.
        self.node = self if self.num_nodes == 1 else self._split(
            self.node_index, local)
        leaders = [min(r for r in range(self.size) if self.node_of_rank[r] == n)
                   for n in sorted(set(self.node_of_rank))]
        self.leaders = self if len(leaders) == self.size else self._split(
            0 if self.local_rank == 0 else None, leaders)
        # the layout numbers the ranks `ring` runs over: the workers when there are servers;
        # every rank (servers too) agrees on it here, so a bad one stops the whole job
        layout = self._agreed_rings(os.environ.get("RINGPS_RINGS") if rings is None else rings,
                                    len(self.worker_ranks))
        self.workers = self if not servers else self._split(
            0 if self.role == "worker" else None, self.worker_ranks, layout or "rank-order")
        self.rings = None if servers else layout

    def _agreed_rings(self, rings, ring_size: int) -> RingLayout | None:
        """The layout `rings` names (text or a RingLayout) for `ring_size` ranks, checked on
        every rank of this communicator: a rank whose layout is unreadable or differs from
        the others' makes every rank raise, naming it. None for the plain ring."""
        try:
            layout, problem = RingLayout.parse(rings, ring_size), None
        except LayoutError as exc:
            layout, problem = None, str(exc)
            if ring_size != self.size:
                problem += f" (a layout numbers the {ring_size} workers; servers are not in it)"
        seen = _allgather_json(self.mpi, [[layout.orders, layout.weights] if layout else None,
                                          problem])
        problems = [p for _, p in seen]
        seen = [o for o, _ in seen]
        bad = {p: [r for r, q in enumerate(problems) if q == p] for p in problems if p}
        if bad:
            who = "; ".join(f"rank{'s' * (len(r) > 1)} {', '.join(map(str, r))}: {p}"
                            for p, r in bad.items())
            raise LayoutError(f"ringps: rank {self.rank}: bad ring layout ({who})")
        if any(other != seen[0] for other in seen):
            who = "; ".join(f"rank {r}: {RingLayout(*o).text}" for r, o in enumerate(seen))
            raise LayoutError(f"ringps: rank {self.rank}: ranks disagree on the ring layout "
                              f"({who})")
        return None if layout.is_rank_order else layout

    def _discover_nodes(self, ranks_per_node: int | None) -> list[int]:
        """Node index of every rank, numbered in order of each node's lowest rank."""
        if ranks_per_node is not None:
            if ranks_per_node < 1:
                raise ValueError(f"ringps: ranks_per_node must be >= 1, got {ranks_per_node}")
            return [r // ranks_per_node for r in range(self.size)]
        shared = self.mpi.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        lowest = np.array([self.rank], dtype=np.int64)
        shared.Allreduce(MPI.IN_PLACE, lowest, op=MPI.MIN)
        shared.Free()
        every = np.empty(self.size, dtype=np.int64)
        self.mpi.Allgather(lowest, every)
        return every.tolist()

    def _split(self, color: int | None, members: list[int],
               rings: str | None = "rank-order") -> "Communicator | None":
        """Communicator of the ranks passing the same color (None: not a member)."""
        sub = self.mpi.Split(MPI.UNDEFINED if color is None else color, self.rank)
        if color is None:
            return None
        return Communicator(sub, timeout=self.timeout, servers=0, rings=rings,
                            transport=self.transport_choice,
                            _node_of_rank=[self.node_of_rank[r] for r in members], _adopt=True)

    def subset(self, ranks: list[int]) -> "Communicator | None":
        """A Communicator of `ranks` (torch's new_group); None on the other ranks. Collective:
        every rank of this communicator calls it with the same list."""
        members = sorted(set(ranks))
        return self._split(0 if self.rank in members else None, members)

    def group_of(self, ranks: list[int]) -> "Communicator":
        """A Communicator of `ranks`, built by those ranks alone (MPI_Comm_create_group), for
        callers like torch's new_group that only run on the members."""
        members = sorted(set(ranks))
        if self.rank not in members:
            raise ValueError(f"ringps: rank {self.rank} is not in the group {members}")
        group = self.mpi.Get_group().Incl(members)
        sub = self.mpi.Create_group(group)
        group.Free()
        return Communicator(sub, timeout=self.timeout, servers=0, rings="rank-order",
                            transport=self.transport_choice,
                            _node_of_rank=[self.node_of_rank[r] for r in members], _adopt=True)

    def device_transport(self):
        """The transport for device buffers (CUDA IPC on the node, staged MPI across nodes),
        made on first use: it needs no collective set-up, so ranks may create it lazily."""
        if getattr(self, "_device_transport", None) is None:
            from .transport.cuda_ipc import CudaIpcTransport
            self._device_transport = CudaIpcTransport(self.mpi, self.timeout, self.node_of_rank)
        return self._device_transport

    def barrier(self) -> None:
        self.transport.barrier()

    def close(self) -> None:
        """Give back the shared segments and the MPI communicators of this communicator and
        of its sub-communicators now; later calls on it raise. Not collective: each rank closes
        its own. The MPI communicators are kept if a transfer failed and may still be pending
        (freeing them could let a late message land in a new communicator)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for sub in (self.node, self.leaders, self.workers):
            if sub is not None and sub is not self:
                sub.close()
        transport, device = self.transport, getattr(self, "_device_transport", None)
        if hasattr(transport, "close"):
            transport.close()
        pending = _pending_requests(transport) or _pending_requests(device)
        for t in (transport, getattr(transport, "inner", None), device):
            if t is not None and not t.broken:
                t.broken = CLOSED
        if pending or not MPI.Is_initialized() or MPI.Is_finalized():
            return
        for mpi_comm in (getattr(device, "comm", None), self.mpi):
            if mpi_comm is not None and mpi_comm != MPI.COMM_NULL:
                mpi_comm.Free()

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def abort(self, code: int = 1) -> None:
        """End the whole job (every rank), as a failed rank must when peers may be waiting
        (watchdog.end_now: MPI_Abort, leaving no shared-memory file behind)."""
        watchdog.end_now(f"rank {self.rank} called abort", code)

    def __repr__(self) -> str:
        return (f"Communicator(rank={self.rank}, size={self.size}, node={self.node_index}/"
                f"{self.num_nodes}, local_rank={self.local_rank}, role={self.role})")
