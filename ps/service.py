"""Starting the parameter server: roles, the server loop, and the worker's KV store.

`ps.init(...)` is called by every rank of the job (it is collective: it duplicates the
communicator for PS traffic). On a server rank it serves until every worker has shut
down, then ends the process cleanly (or returns None with `exit_server=False`); on a
worker it returns the KVStore, whose `.comm` is the workers-only Communicator, and makes
that the default communicator of `collectives`, so `allreduce(x, algorithm="ps")` and the
flat algorithms all run among the workers. The workers' stores shut down at exit (or on
`kv.shutdown()`), which is what releases the servers.
"""
from __future__ import annotations

import atexit
import sys

from . import checkpoint, server, sharding
from .wire import Wire
from .worker import KVStore

_current: KVStore | None = None


def current() -> KVStore:
    """This process's KV store (the link to the servers), for the `ps` and `hierarchical`
    allreduce algorithms."""
    if _current is None or _current.closed:
        raise RuntimeError("ringps: algorithms 'ps' and 'hierarchical' need server ranks: start "
                           "the job with servers=S (collectives.init(servers=S), ps.init(...) "
                           "or RINGPS_SERVERS=S) and W+S ranks")
    return _current


def init(comm=None, *, servers: int | None = None, placement: str = "dedicated",
         ranks_per_node: int | None = None, consistency: str = "bsp", staleness: int = 0,
         quorum: float | None = None, optimizer="sum",
         block_bytes: int = sharding.DEFAULT_BLOCK_BYTES, slicer="hash",
         restore: str | None = None, exit_server: bool = True, timeout: float | None = None):
    """Start a parameter server of `servers` shards over `comm` (default: COMM_WORLD).

    consistency: "bsp" (with an optional quorum fraction), "asp" or "ssp" (with staleness);
    optimizer: the server handler ("sum", "accumulate", "sgd", "momentum", "adam",
    "adagrad", a (name, params) pair or a handler instance); slicer: "hash" (consistent
    hashing with virtual nodes) or "range" (ps-lite key ranges); restore: a checkpoint
    directory to resume from. These are the defaults of `kv.init`, which may override them
    per key."""
    from collectives.comm import Communicator
    if isinstance(comm, Communicator) and comm.server_ranks:
        world = comm
    else:
        settings = {"servers": servers, "placement": placement, "ranks_per_node": ranks_per_node}
        if timeout is not None:
            settings["timeout"] = timeout
        world = Communicator(comm, **settings)
    if not world.server_ranks:
        raise ValueError("ringps: a parameter server needs servers=S >= 1 (argument or "
                         "RINGPS_SERVERS) and at least S+1 ranks")
    options = {"consistency_name": consistency, "staleness": staleness, "quorum": quorum,
               "optimizer": optimizer, "block_bytes": block_bytes, "slicer": slicer}
    return _start(world, options, restore, exit_server)


def serve_or_attach(world) -> "object":
    """collectives.init(servers=S): servers serve (and exit), workers get their Communicator."""
    kv = _start(world, {}, None, exit_server=True)
    return kv.comm


def _start(world, options: dict, restore: str | None, exit_server: bool):
    global _current
    wire = Wire(world.mpi)
    saved = checkpoint.load(restore)[1] if restore else None
    if world.role == "server":
        index = world.server_ranks.index(world.rank)
        server.run(wire, world.worker_ranks, index, saved, world.timeout)
        if exit_server:
            sys.exit(0)
        return None
    kv = KVStore(wire, world.server_ranks, world.workers, timeout=world.timeout, **options)
    _current = kv
    import collectives.api
    if collectives.api._default is None:      # a job's first init picks the default
        collectives.api._default = world.workers
    atexit.register(kv.shutdown)
    return kv
