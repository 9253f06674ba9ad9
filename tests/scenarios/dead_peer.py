"""Rank 1 dies before the collective; the job must end (mpiexec tears it down), not hang."""
import os

import numpy as np

import collectives as C

comm = C.init()
if comm.rank == 1:
    os._exit(3)
C.allreduce(np.ones(1 << 20, np.float32), algorithm="ring")
print(f"rank {comm.rank}: finished although rank 1 is dead", flush=True)
