"""Reproducer: a ring allreduce over shared memory inside nodes and MPI across them hangs.

Four ranks as two pretend nodes of two (RINGPS_RANKS_PER_NODE=2 semantics, transport auto,
default settings otherwise): the ring 0 -> 1 -> 2 -> 3 -> 0 runs 0->1 and 2->3 over shared
memory, 1->2 and 3->0 over MPI. Each rank posts its MPI sends to the next node and then
waits for shared-memory receives; ShmTransport.waitall (collectives/transport/shm.py) only
calls into MPI when MPI requests are among those waited for, so while a rank waits on
shared memory its own posted MPI sends make no progress once MPI's eager cells are full,
and the peer on the next node waits for them forever: a cycle. Every rank ends in
PeerTimeout after RINGPS_TIMEOUT seconds (the library's guard works; the collective does
not). Calling into MPI's progress engine inside that wait loop (an `Iprobe` on the inner
communicator, tried on a copy) makes the same call finish in about a second.

    RINGPS_TIMEOUT=5 mpiexec -n 4 python tests/fuzz/repro_mixed_hang.py

Prints "rank R: ok" on every rank when fixed; today "rank R: PeerTimeout: ...".
"""
import sys

import numpy as np
from mpi4py import MPI

import collectives as C

comm = C.Communicator(transport="auto", ranks_per_node=2)
x = np.ones(8_000_000, np.float32)                       # 32 MB: 128 segments of 64 KB a step
try:
    C.allreduce(x, algorithm="ring", comm=comm, segment_bytes=65536)
    ok = bool((x == comm.size).all())
    print(f"rank {comm.rank}: {'ok' if ok else 'WRONG RESULT'}", flush=True)
except C.PeerTimeout as exc:
    print(f"rank {comm.rank}: PeerTimeout: {exc}", flush=True)
    ok = False
sys.stdout.flush()
if not ok:
    MPI.COMM_WORLD.Abort(1)      # peers may still wait on this rank: end the job
