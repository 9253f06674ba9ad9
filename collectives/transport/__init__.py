"""How bytes move between ranks. Algorithms talk to a Transport, never to mpi4py.

    base.py      the interface (isend / irecv / irecv_reduce / sendrecv / waitall) and Request
    mpi.py       MPI point-to-point through mpi4py: portable, works across nodes
    shm.py       ranks of one node read each other's memory (anonymous shared segments);
                 other peers through the inner transport
    gloo.py      a torch gloo group (torchrun, no MPI)
    cuda_ipc.py  device buffers of one node through CUDA IPC
    counting.py  a wrapper that counts the bytes each rank sends (tests check schedules with it)

`select` picks what a communicator uses: RINGPS_TRANSPORT=auto (shared memory between ranks
of one node, the inner transport across nodes), mpi (the inner transport only) or shm (like
auto, but an error where shared memory cannot be set up).
"""
from __future__ import annotations

import os

from .base import PeerTimeout, Request, Transport

CHOICES = ("auto", "mpi", "shm")

__all__ = ["CHOICES", "PeerTimeout", "Request", "Transport", "chosen", "select"]


def chosen(choice: str | None = None) -> str:
    """The transport asked for: `choice`, else RINGPS_TRANSPORT, else auto."""
    choice = (choice or os.environ.get("RINGPS_TRANSPORT") or "auto").lower()
    if choice not in CHOICES:
        raise ValueError(f"ringps: unknown transport {choice!r} (known: {', '.join(CHOICES)}; "
                         f"set by RINGPS_TRANSPORT or transport=)")
    return choice


def select(inner: Transport, node_of_rank: list[int] | None, choice: str | None = None
           ) -> Transport:
    """Collective over `inner` (every rank calls it): `inner` wrapped in the shared-memory
    transport for the ranks that share a node, or `inner` itself (choice mpi, one rank, or
    no two ranks on one node under auto)."""
    choice = chosen(choice)
    if choice == "mpi" or inner.size == 1:
        return inner
    from .shm import ShmTransport
    shm, problem = ShmTransport.connect(inner, node_of_rank)
    if shm is None and choice == "shm":
        raise RuntimeError(f"ringps: rank {inner.rank}: RINGPS_TRANSPORT=shm, but shared "
                           f"memory cannot be used: {problem}")
    if shm is None or (not shm.peers and choice == "auto"):
        return inner
    return shm
