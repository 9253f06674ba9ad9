"""ringps collectives: allreduce and its parts, by every classic strategy, over MPI.

    import numpy as np, collectives as C
    x = np.ones(10, np.float32) * (C.rank() + 1)
    C.allreduce(x, op="sum", algorithm="ring")      # in place; root, ring, oneshot, ...

Importing this package does not start MPI; the first call (or `init`) does.
"""
from .api import (allgather, allreduce, broadcast, chunk, default_comm, empty, init, rank,
                  reduce, reduce_scatter, size, zeros)
from .dtypes import DTYPE_NAMES
from .errors import InputError, MismatchError, PeerTimeout
from .fusion import allreduce_coalesced
from .ops import OP_NAMES
from .registry import ALGORITHMS, COLLECTIVES, NEED_SERVERS, flat_algorithms

__all__ = ["ALGORITHMS", "COLLECTIVES", "Communicator", "DTYPE_NAMES", "InputError",
           "MismatchError", "NEED_SERVERS", "OP_NAMES", "PeerTimeout", "allgather",
           "allreduce", "allreduce_coalesced", "broadcast", "chunk", "default_comm", "empty",
           "flat_algorithms", "init", "rank", "reduce", "reduce_scatter", "size", "zeros"]


def __getattr__(name):
    if name == "Communicator":          # imports mpi4py, so only when asked for
        from .comm import Communicator
        return Communicator
    raise AttributeError(f"module 'collectives' has no attribute {name!r}")
