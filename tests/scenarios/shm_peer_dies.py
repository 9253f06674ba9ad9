"""A rank frozen (SIGSTOP) or killed (SIGKILL) in the middle of a shared-memory allreduce,
after `dies_at` published pieces. Frozen: every survivor raises PeerTimeout once
RINGPS_TIMEOUT has passed, prints it, and stays until the test ends the job (the launcher
waits for the frozen rank). Killed: the launcher ends the job. Run by
tests/test_shm_failures.py: python shm_peer_dies.py freeze|kill ALGORITHM DIES_AT.
ALGORITHM "board": a small oneshot call (the C board); the victim stops just before it."""
import os
import signal
import sys
import time

import numpy as np

import collectives as C
from collectives.transport.shm import ShmTransport

mode, algorithm, dies_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
comm = C.init()
victim = comm.size - 1
transport = comm.transport
assert isinstance(transport, ShmTransport), type(transport)

board = algorithm == "board"
if board:
    assert transport.board is not None, "the C board is not built"
    C.allreduce(np.ones(10, np.float32), algorithm="oneshot")     # one call that completes
    if comm.rank == victim:
        os.kill(os.getpid(), signal.SIGSTOP if mode == "freeze" else signal.SIGKILL)
elif comm.rank == victim:
    publish, published = transport._publish, []

    def publish_then_stop(*args, **kwargs):
        published.append(1)
        if len(published) == dies_at:       # some pieces out, the call half done
            os.kill(os.getpid(), signal.SIGSTOP if mode == "freeze" else signal.SIGKILL)
        return publish(*args, **kwargs)

    transport._publish = publish_then_stop

x = np.ones(1000 if board else 4 << 20, np.float32)
try:
    C.allreduce(x, algorithm="oneshot" if board else algorithm, check=False)
    print(f"rank {comm.rank}: finished without rank {victim}", flush=True)
except C.PeerTimeout as exc:
    print(f"rank {comm.rank}: PeerTimeout: {exc}", flush=True)
time.sleep(600)                              # the test ends the job
