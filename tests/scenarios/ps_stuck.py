"""A parameter-server job (3 workers + 2 servers, RINGPS_TIMEOUT from the test) in which
one rank hangs after a few steps; nobody handles what is raised, as a training loop would
not. ringps alone must end the job, naming the rank that went quiet. Run by
tests/test_teardown.py:

    python ps_stuck.py freeze-worker bsp|asp     worker 2 (world rank 2) SIGSTOPs at step 3
    python ps_stuck.py freeze-server bsp         server 1 (world rank 4) SIGSTOPs on a pull
                                                 after its first dozen requests
"""
import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import ps
import ps.server

who, consistency = sys.argv[1], sys.argv[2]
world = MPI.COMM_WORLD.rank
if who == "freeze-server" and world == MPI.COMM_WORLD.size - 1:
    handle = ps.server.Server.handle

    def handle_then_freeze(self, header, source):
        if header["op"] == "pull" and self.served > 12:
            os.kill(os.getpid(), signal.SIGSTOP)
        return handle(self, header, source)

    ps.server.Server.handle = handle_then_freeze

kv = ps.init(servers=2, consistency=consistency, block_bytes=64)
rank = kv.rank
w = np.zeros(64, np.float32)
kv.init("w", w)
for step in range(8):
    if who == "freeze-worker" and rank == 2 and step == 3:
        os.kill(os.getpid(), signal.SIGSTOP)
    kv.wait(kv.push("w", np.full(64, rank + 1.0, np.float32)))
    kv.wait(kv.pull("w", w))
    print(f"worker {rank} (world rank {world}): step {step}", flush=True)
print(f"worker {rank}: FINISHED", flush=True)
