"""Memory-bandwidth probe: the ceiling for collectives between ranks of one machine.

Every rank at once times a copy (b = a: 2 bytes moved per byte) and an add (a += b: 3 bytes
moved per byte) over arrays larger than the caches; the best of a few tries counts. On one
machine a collective's data crosses memory, not a network, so busbw cannot beat these."""
from __future__ import annotations

import time

import numpy as np

import collectives as C

PROBE_BYTES = 64 << 20


def probe(comm, nbytes: int = PROBE_BYTES, tries: int = 5) -> dict:
    a = np.ones(nbytes // 8)
    b = np.ones_like(a)
    best = {"copy": np.inf, "add": np.inf}
    for _ in range(tries):
        comm.barrier()
        for name, run in (("copy", lambda: np.copyto(b, a)), ("add", lambda: np.add(a, b, out=a))):
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    per_rank = np.array([2 * nbytes / best["copy"], 3 * nbytes / best["add"]]) / 1e9
    total = per_rank.copy()
    C.allreduce(total, op="sum", comm=comm, check=False)
    return {"copy_GBps_per_rank": round(float(per_rank[0]), 2),
            "add_GBps_per_rank": round(float(per_rank[1]), 2),
            "copy_GBps_all_ranks": round(float(total[0]), 2),
            "add_GBps_all_ranks": round(float(total[1]), 2),
            "probe_bytes": nbytes}
