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


def transport_of(comm, label: str) -> str:
    """'shm' or 'mpi': what carried a row's bytes (ALGO/TRANSPORT rows say it; plain rows
    used the communicator's own transport; a trailing * marks shared buffers)."""
    if "/" in label:
        named = label.split("/", 1)[1].rstrip("*")
        if named != "auto":
            return named
    return "shm" if getattr(comm.transport, "peers", None) else "mpi"


def roofline(rows: list[dict], probe: dict, comm) -> None:
    """Add `roofline` to each ringps row: the time its schedule's memory traffic
    (Schedule.memory: bytes read and written by every rank) needs at the copy bandwidth
    measured in this run, over the time measured; 1.0 is the ceiling. All ranks share the
    memory system, so the bound is the larger of (every rank's traffic) / (all ranks' copy
    bandwidth) and (the busiest rank's traffic) / (one rank's copy bandwidth)."""
    from collectives import COLLECTIVES
    from collectives.transport.shm import CMA_MIN
    in_place = CMA_MIN if getattr(comm.transport, "cma", False) else float("inf")
    for row in rows:
        name = row.get("chosen") or row["algo"].split("/")[0].split("[")[0].rstrip("*")
        registry = COLLECTIVES.get(row["collective"], {})
        if name not in registry or not row["time_us"] or row["ranks"] < 2:
            continue
        try:
            schedule = registry.schedule(name, row["ranks"], row["count"],
                                         row["bytes"] // max(row["count"], 1))
        except (AttributeError, TypeError, ValueError):
            continue                        # no schedule to price (ps, hierarchical)
        transport = transport_of(comm, row["algo"])
        resident = row["algo"].endswith("*")          # buffers from collectives.empty
        traffic = [sum(schedule.memory(r, transport, resident, in_place)) for r in
                   range(row["ranks"])]
        seconds = max(sum(traffic) / (probe["copy_GBps_all_ranks"] * 1e9),
                      max(traffic) / (probe["copy_GBps_per_rank"] * 1e9))
        row["roofline"] = round(seconds / (row["time_us"] * 1e-6), 3)
