"""The wire between workers and server shards: tags, message kinds, and waiting.

Every request is a small header on REQUEST (a fixed binary prefix and a JSON object, never
pickle: wire.py has the format), followed (for pushes and row lists) by raw payloads on
DATA; MPI keeps one sender's messages in order per tag, so a server that has read a header
takes the sender's next DATA message(s) as its payload. A reply is a header of the same
format on the request's reply tag and, for pulls, the raw payload on the tag after it,
received straight into the caller's output. The reply tag comes from the request id,
so replies may come back in any order (a BSP pull waits while a later pull is answered).

    kind        header fields                              payload        reply
    init        key, block, rows, width, dtype, handler,   the block or -  ok, version
                policy, value (does worker 0 send it)
    push        key, block, nbytes                         gradient       ok (applied/queued)
    push_rows   key, block, count                          ids, grads     ok
    pull        key, block                                 -              ok, version + value
    pull_rows   key, block, count                          ids            ok, version + rows
    allreduce   group, seq, part, expected, dtype, op, n   the part       the reduced part
    checkpoint  path, id                                   -              ok, file, sha256,
                                                                          blocks (listing)
    bye         -                                          -              (none)

Every request also carries rid (its id), and all but bye carry payload (the byte count of
each payload) and expects_payload. FIELDS below is this table as the decoder checks it: a
header of an unknown kind, with a field missing or of the wrong type, is refused with a
clear error instead of reaching the server's handlers.

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
MAX_ERROR = 2000            # characters of an error text in a reply
SPIN_SECONDS = 50e-6
IDLE_SLEEP_AFTER = 5e-3


class PSError(RuntimeError):
    """A server refused a request (wrong shape or dtype for a key, unknown key, ...)."""


class PSTimeout(TimeoutError):
    """A server did not answer within the timeout."""


# The fields each kind of header must have, and their types ("tuple" travels as a JSON list
# and is given back as a tuple, so it can key a dict). Fields not named here may be present.
COMMON = {"rid": "int", "payload": "sizes", "expects_payload": "bool"}
FIELDS = {
    "init": {**COMMON, "key": "str", "key_shown": "str", "block": "int", "meta": "dict"},
    "push": {**COMMON, "key": "str", "key_shown": "str", "block": "int", "dtype": "str"},
    "push_rows": {**COMMON, "key": "str", "key_shown": "str", "block": "int", "dtype": "str"},
    "pull": {**COMMON, "key": "str", "key_shown": "str", "block": "int", "dtype": "str"},
    "pull_rows": {**COMMON, "key": "str", "key_shown": "str", "block": "int", "dtype": "str"},
    "allreduce": {**COMMON, "group": "tuple", "seq": "int", "part": "int", "expected": "int",
                  "dtype": "str", "reduce": "str"},
    "checkpoint": {**COMMON, "path": "str", "id": "str"},
    "bye": {"rid": "int"},
}
OPTIONAL = {"codec": "str", "count": "int"}           # compressed pushes and allreduce parts
REPLY_FIELDS = {"ok": "bool"}
REPLY_OPTIONAL = {"error": "str", "version": "int"}


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
