"""Meeting points for libraries that need a TCP rendezvous (torch.distributed's store), found
over MPI: rank 0 picks a free port and everyone learns it, with the address to dial (ranks
on rank 0's host dial 127.0.0.1). If rank 0 cannot open a port, every rank learns that too,
instead of dialling nothing."""
from __future__ import annotations

import os
import socket

import numpy as np

from .api import broadcast

# Set by mpiexec/mpirun/srun for each rank they start (SLURM_PROCID alone is not: a batch
# script has it too).
MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def under_mpi() -> bool:
    """Was this process started by an MPI launcher?"""
    return any(name in os.environ for name in MPI_ENV)


def rendezvous(comm) -> tuple[str, int]:
    """(host, port) of a free TCP port on rank 0, agreed by every rank of `comm`."""
    info = np.zeros(258, dtype=np.uint8)
    if comm.rank == 0:
        try:
            with socket.socket() as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
            host = (os.environ.get("MASTER_ADDR") or socket.gethostname()).encode()[:255]
            info[:2] = divmod(port, 256)
            info[2:2 + len(host)] = np.frombuffer(host, np.uint8)
        except OSError:
            info[:2] = 0
    broadcast(info, root=0, comm=comm, check=False)
    port = int(info[0]) * 256 + int(info[1])
    if port == 0:
        raise RuntimeError("ringps: rank 0 could not open a rendezvous port")
    host = bytes(info[2:]).rstrip(b"\0").decode()
    if host == socket.gethostname() and "MASTER_ADDR" not in os.environ:
        host = "127.0.0.1"
    return host, port
