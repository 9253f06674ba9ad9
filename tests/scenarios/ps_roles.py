"""A user's script under `RINGPS_SERVERS=S mpiexec -n W+S` (or collectives.init(servers=S)):
server ranks serve inside init and end cleanly; the workers never see them, run flat and
PS-backed allreduces on the worker-only communicator, and their exit releases the servers.
Prints one line per worker; a server that got past init would print 'SERVER RAN ON'."""
import sys

import numpy as np
from mpi4py import MPI

import collectives as C

world = MPI.COMM_WORLD.rank
comm = C.init() if sys.argv[1] == "env" else C.init(servers=int(sys.argv[1]))
if comm.size == MPI.COMM_WORLD.size:
    print(f"SERVER RAN ON world rank {world}", flush=True)
for algorithm in ("ring", "ps", "hierarchical"):
    x = np.full(1001, comm.rank + 1.0)
    C.allreduce(x, algorithm=algorithm)                 # default communicator: the workers
    assert (x == comm.size * (comm.size + 1) / 2).all(), (algorithm, x[:3])
print(f"worker {comm.rank} of {comm.size} (world rank {world}) ok", flush=True)
