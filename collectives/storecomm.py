"""A Communicator for jobs without an MPI world (torchrun): ranks and bytes come from a torch
gloo process group built on the rendezvous store torch hands the backend. It offers what the
algorithms and the torch backend use (rank, size, transport, barrier, abort); all its ranks
count as one node (torchrun's LOCAL_RANK says where a rank sits on its host). Ranks that
share a host (found by hostname through the store) read each other's memory through the
shared-memory transport, as under mpiexec (RINGPS_TRANSPORT=mpi keeps them on gloo)."""
from __future__ import annotations

import os
import sys
from datetime import timedelta

from . import watchdog
from .transport import select
from .transport.gloo import GlooTransport


class StoreCommunicator:
    def __init__(self, store, rank: int, size: int, timeout: float):
        import torch.distributed as dist
        self.pg = dist.ProcessGroupGloo(store, rank, size, timedelta(seconds=timeout))
        self.rank, self.size, self.timeout = rank, size, timeout
        self.transport = select(GlooTransport(self.pg, timeout, store), None)
        watchdog.use_store(store)
        watchdog.install()
        self.local_rank = int(os.environ.get("LOCAL_RANK", rank))
        self.num_nodes, self.node_index = 1, 0

    def barrier(self) -> None:
        self.transport.barrier()

    def close(self) -> None:
        if hasattr(self.transport, "close"):
            self.transport.close()

    def abort(self, code: int = 1) -> None:
        """No MPI to tear the job down: leave the reason in the store, end this process;
        the others stop waiting when they see it, and torchrun stops whoever is left."""
        sys.stderr.flush()
        watchdog.end_now("a collective failed on it")

    def __repr__(self) -> str:
        return f"StoreCommunicator(rank={self.rank}, size={self.size})"
