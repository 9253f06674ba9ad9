"""How bytes move between ranks. Algorithms talk to a Transport, never to mpi4py.

    base.py      the interface (isend / irecv / irecv_reduce / sendrecv / waitall) and Request
    mpi.py       MPI point-to-point through mpi4py: portable, works across nodes
    counting.py  a wrapper that counts the bytes each rank sends (tests check schedules with it)
"""
from .base import PeerTimeout, Request, Transport

__all__ = ["PeerTimeout", "Request", "Transport"]
