"""The wire between workers and server shards: tags, message kinds, and waiting.

Every request is a small pickled header on REQUEST, followed (for pushes and row lists) by
raw payloads on DATA; MPI keeps one sender's messages in order per tag, so a server that
has read a header takes the sender's next DATA message(s) as its payload. A reply is a
pickled header on the request's reply tag and, for pulls, the raw payload on the tag after
it, received straight into the caller's output. The reply tag comes from the request id,
so replies may come back in any order (a BSP pull waits while a later pull is answered).

    kind        header fields                              payload        reply
    init        key, block, rows, width, dtype, handler,   the block or -  ok, version
                policy, value (does worker 0 send it)
    push        key, block, nbytes                         gradient       ok (applied/queued)
    push_rows   key, block, count                          ids, grads     ok
    pull        key, block                                 -              ok, version + value
    pull_rows   key, block, count                          ids            ok, version + rows
    allreduce   group, seq, part, expected, dtype, op, n   the part       the reduced part
    checkpoint  path                                       -              ok, file, sha256
    bye         -                                          -              (none)

Errors come back as {"ok": False, "error": text} to the one worker that caused them; the
server goes on serving the others. wire.py moves these messages (the only mpi4py in ps/).
"""
from __future__ import annotations

import os
import time

REQUEST = 1
DATA = 2
REPLY_BASE = 16
SLOTS = 8000                # reply-tag pairs: REPLY_BASE .. REPLY_BASE + 2 * SLOTS < 32767
MAX_ERROR = 2000            # reply headers stay far below mpi4py's 32 KiB irecv buffer
SPIN_SECONDS = 50e-6
IDLE_SLEEP_AFTER = 5e-3


class PSError(RuntimeError):
    """A server refused a request (wrong shape or dtype for a key, unknown key, ...)."""


class PSTimeout(TimeoutError):
    """A server did not answer within the timeout."""


def reply_tags(rid: int) -> tuple[int, int]:
    slot = rid % SLOTS
    return REPLY_BASE + 2 * slot, REPLY_BASE + 2 * slot + 1


def error(text: str) -> dict:
    return {"ok": False, "error": text[:MAX_ERROR]}


class Idler:
    """Backs off while polling: spin a little, then yield the core, then nap, because servers
    and waiting workers often share cores with the ranks doing the work."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.since = time.monotonic()

    def idle(self) -> None:
        waited = time.monotonic() - self.since
        if waited < SPIN_SECONDS:
            return
        if waited < IDLE_SLEEP_AFTER:
            os.sched_yield()
        else:
            time.sleep(100e-6)
