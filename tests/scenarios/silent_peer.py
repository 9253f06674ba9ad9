"""Rank 1 never joins the collective; the others must raise PeerTimeout naming whom they
waited for, within the communicator's timeout, instead of hanging. Rank 1 stays alive (a
hung peer, not a dead one) until the others have reported, however slow the machine is."""
import os
import sys
import time
from pathlib import Path

import numpy as np

import collectives as C

check = sys.argv[1] == "check"
marks = Path(sys.argv[2])
comm = C.init(timeout=2.0)


def wait_for_everyone_to_report() -> None:
    """No rank leaves before all have printed: a rank that exits early can take the job down."""
    deadline = time.monotonic() + 120
    while len(list(marks.glob("done-*"))) < comm.size - 1 and time.monotonic() < deadline:
        time.sleep(0.1)


if comm.rank != 1:
    try:
        C.allreduce(np.ones(1000, np.float32), algorithm="ring", check=check)
        print(f"rank {comm.rank}: NO ERROR", flush=True)
    except C.PeerTimeout as exc:
        print(f"rank {comm.rank}: PeerTimeout: {exc}", flush=True)
    try:                                   # the communicator must refuse further use
        C.allreduce(np.ones(4, np.float32), check=check)
    except C.PeerTimeout as exc:
        print(f"rank {comm.rank}: then: {exc}", flush=True)
    (marks / f"done-{comm.rank}").touch()
wait_for_everyone_to_report()
os._exit(0)       # peers still hold requests for rank 1; skip MPI_Finalize's wait for them
