"""Reproducer: after a PeerTimeout, a late peer's messages land in freed memory.

Rank 1 joins a ring allreduce (MPI transport) after the others have timed out. Their
receives for its segments are still posted, into scratch that `ring` allocated for the
call and dropped when PeerTimeout unwound it (transport/base.py: `irecv_reduce` receives
into `scratch`; `_fail` marks the transport unusable but leaves the receives posted). The
next MPI call anywhere in the process (here: building a fresh communicator) lets MPI
complete those receives into memory Python has since reused (here: sentinel arrays), so the
process silently corrupts unrelated arrays or crashes, instead of reporting and carrying on.

    RINGPS_TIMEOUT=2 mpiexec -n 3 python tests/fuzz/repro_after_timeout.py

Prints "rank R: memory intact" on each rank when the bug is fixed; today rank 2 (which
receives from the late rank 1) prints "memory overwritten: 19994 of 200000 sentinel values
changed". With larger buffers (scratch from mmap, unmapped when freed) the same late
receives end the process with SIGSEGV inside MPI instead (seen in the fuzzer, inside
MPI_Comm_dup).
"""
import faulthandler
import gc
import os
import sys
import time

import numpy as np

import collectives as C

faulthandler.enable()
comm = C.Communicator(transport="mpi")
x = np.ones(60_000, np.float32)       # scratch of 2 x 80 KB: heap memory, reused at once
if comm.rank == 1:
    time.sleep(comm.timeout + 1)          # late: the others have given up by now
try:
    C.allreduce(x, algorithm="ring", comm=comm, segment_bytes=4096, check=False)
    print(f"rank {comm.rank}: no timeout", flush=True)
except C.PeerTimeout as exc:
    print(f"rank {comm.rank}: PeerTimeout: {str(exc)[:80]}...", flush=True)
gc.collect()                               # the call's scratch is free memory now ...
sentinels = [np.full(5_000, 7.0) for _ in range(40)]     # ... and reused by these (40 KB each)
time.sleep(1)                              # rank 1's sends are out by now
fresh = C.Communicator(transport="mpi")    # MPI makes progress here: the late messages land
y = np.full(1000, fresh.rank + 1.0)
C.allreduce(y, comm=fresh)
changed = sum(int((s != 7.0).sum()) for s in sentinels)
intact = changed == 0 and (y == 6.0).all()
if not intact:
    print(f"rank {fresh.rank}: memory overwritten: {changed} of {40 * 5000} sentinel values "
          f"changed", flush=True)
if intact:
    print(f"rank {fresh.rank}: memory intact", flush=True)
fresh.barrier()   # nobody leaves early: mpiexec kills the others when one rank skips Finalize
sys.stdout.flush()
os._exit(0)       # the old communicator's requests would make MPI_Finalize wait
