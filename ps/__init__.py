"""ringps's sharded parameter server over MPI (ps-lite's shape), and the `ps` and
`hierarchical` allreduce strategies built on it.

    import ps
    kv = ps.init(servers=2, consistency="ssp", staleness=3, optimizer=("sgd", {"lr": 0.1}))
    kv.init("w", w)                       # every worker; server ranks never get here
    kv.wait(kv.push_pull("w", grad, out=w))

Modules: service (roles, start-up), worker (the KV store), server (a shard's loop),
protocol (the wire), sharding (blocks and slicers), consistency (BSP, quorum, ASP, SSP),
optim (server handlers), checkpoint, allreduce (`ps`, `hierarchical`).
"""
from .checkpoint import CheckpointError
from .protocol import PSError, PSTimeout
from .sharding import ConsistentHashSlicer, KeyRangeSlicer


def init(*args, **kwargs):
    from .service import init as _init
    return _init(*args, **kwargs)


init.__doc__ = "See ps.service.init."

__all__ = ["CheckpointError", "ConsistentHashSlicer", "KeyRangeSlicer", "PSError", "PSTimeout",
           "init"]
