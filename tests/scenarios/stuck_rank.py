"""One rank of a job misbehaves; the others call allreduce and do NOT handle what it raises,
as a training script would not. ringps alone must end the job. Run by
tests/test_teardown.py:

    python stuck_rank.py BEHAVIOUR [CHECK] [CATCH]

BEHAVIOUR (of the last rank):
    freeze      SIGSTOP itself before the second allreduce (a hung process, not a dead one)
    freeze-mid  SIGSTOP itself halfway through the second allreduce's sends
    raise       raise ValueError instead of calling the second allreduce
    straggle:S  sleep S seconds, then call it (late, alive)
CHECK: "check" (the metadata check, the default) or "nocheck".
CATCH: "catch": survivors catch PeerTimeout, print it, and exit normally.
"""
import os
import signal
import sys
import time

import numpy as np

import collectives as C

behaviour = sys.argv[1]
check = (sys.argv[2] if len(sys.argv) > 2 else "check") == "check"
catch = len(sys.argv) > 3 and sys.argv[3] == "catch"
comm = C.init()
victim = comm.size - 1
x = np.full(100_000, comm.rank + 1, dtype=np.float32)
C.allreduce(x, algorithm="ring", check=check)                 # allreduce #1: everyone is fine
print(f"rank {comm.rank}: first allreduce ok", flush=True)

if comm.rank == victim:
    if behaviour == "freeze":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif behaviour == "freeze-mid":
        isend, sent = comm.transport.isend, []

        def isend_then_stop(*args, **kwargs):
            sent.append(1)
            if len(sent) == 2:
                os.kill(os.getpid(), signal.SIGSTOP)
            return isend(*args, **kwargs)

        comm.transport.isend = isend_then_stop
    elif behaviour == "raise":
        raise ValueError(f"rank {comm.rank} failed on purpose")
    elif behaviour.startswith("straggle:"):
        time.sleep(float(behaviour.split(":")[1]))

started = time.monotonic()
try:
    C.allreduce(x, algorithm="ring", check=check)             # allreduce #2
except C.PeerTimeout as exc:
    if not catch:
        raise
    print(f"rank {comm.rank}: caught after {time.monotonic() - started:.1f} s: {exc}", flush=True)
    sys.exit(0)
expected = comm.size * comm.size * (comm.size + 1) / 2   # n * (1 + 2 + ... + n)
assert (x == expected).all(), f"rank {comm.rank}: wrong sum {x[:3]} != {expected}"
print(f"rank {comm.rank}: second allreduce ok after {time.monotonic() - started:.1f} s",
      flush=True)
