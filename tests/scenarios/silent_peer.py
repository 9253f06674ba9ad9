"""Rank 1 never joins the collective; the others must raise PeerTimeout naming whom they
waited for, within the communicator's timeout, instead of hanging."""
import os
import sys
import time

import numpy as np

import collectives as C

check = sys.argv[1] == "check"
comm = C.init(timeout=2.0)
if comm.rank == 1:
    time.sleep(8)
else:
    try:
        C.allreduce(np.ones(1000, np.float32), algorithm="ring", check=check)
        print(f"rank {comm.rank}: NO ERROR", flush=True)
    except C.PeerTimeout as exc:
        print(f"rank {comm.rank}: PeerTimeout: {exc}", flush=True)
    try:                                   # the communicator must refuse further use
        C.allreduce(np.ones(4, np.float32), check=check)
    except C.PeerTimeout as exc:
        print(f"rank {comm.rank}: then: {exc}", flush=True)
os._exit(0)       # peers still hold requests for rank 1; skip MPI_Finalize's wait for them
