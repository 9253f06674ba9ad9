"""A sweep: one collective over sizes x implementations (ringps algorithms and baselines),
each timed by the harness and checked by its definition. Produces rows (dicts) with the
columns every output (table, CSV, JSON, plots) uses."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

import collectives as C

from .baselines import Unavailable
from .definitions import Definition, zero
from .harness import auto_iters, interleaved
from .units import gbps

BASELINE_NAMES = ("mpi", "gloo")


def itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def run_sweep(comm, definition: Definition, sizes, *, dtype="float32", op="sum", algorithms,
              baselines=(), others=None, iters=None, warmup=2, check=True,
              metadata_check=False, progress=None, notes=None) -> list[dict]:
    """`others`: {label: (algorithm, communicator[, "shared"])}, an algorithm measured on
    another communicator of the same ranks (the ring over a ring layout, another transport),
    reported as `label`; with "shared", on a buffer from collectives.empty (no copy-in)."""
    rows = []
    for nbytes in sizes:
        count = nbytes // itemsize(dtype)
        case = definition.case(comm, count, dtype, op)
        runs = []
        for baseline in baselines:
            try:
                runs.append((baseline.name, definition.baseline(case, baseline)))
            except Unavailable as why:
                if notes is not None:
                    notes.add(f"{baseline.name} {definition.name} {dtype}: {why}")
        runs = [(name, run, case) for name, run in runs]
        runs += [(name, definition.ringps(case, name, metadata_check), case)
                 for name in algorithms]
        for label, (name, other, *shared) in (others or {}).items():
            mine = replace(case, comm=other)
            if shared:                       # a buffer in the rank's shared segment
                mine.x = definition.shared_buffer(mine)
            runs.append((label, definition.ringps(mine, name, metadata_check), mine))
        size_rows = []
        timings = interleaved([run for _, run, _ in runs], comm, auto_iters(nbytes, iters),
                              warmup, done=lambda i: progress.update(1) if progress else None)
        for (name, run, used), timing in zip(runs, timings):
            wrong = _check(definition, used, name, run, comm) if check else -1
            algbw = gbps(count * itemsize(dtype), timing.median)
            size_rows.append({
                "collective": definition.name, "algo": name, "dtype": dtype,
                "op": case.op or "", "ranks": comm.size, "nodes": comm.num_nodes,
                "bytes": count * itemsize(dtype), "count": count,
                "time_us": timing.median * 1e6, "min_us": timing.min * 1e6,
                "max_us": timing.max * 1e6, "iters": timing.iters, "algbw": algbw,
                "busbw": algbw * definition.busbw_factor(comm.size), "wrong": wrong})
            _explain(size_rows[-1], name, notes)
        _ratios(size_rows)
        rows += size_rows
    return rows


def _explain(row: dict, name: str, notes) -> None:
    """Algorithms that choose another (auto) say what they chose and why."""
    registry = C.COLLECTIVES.get(row["collective"], {})
    choice = getattr(registry[name], "last_choice", None) if name in registry else None
    if choice:
        row["chosen"] = choice["algorithm"]
        said = {n.split(":")[0] for n in notes} if notes is not None else set()
        first = f"{name} on {row['ranks']} ranks chose {choice['algorithm']}"
        if notes is not None and first not in said:         # one example per choice
            notes.add(f"{first}: e.g. {choice['reason']}")


def _check(definition, case, name, run, comm) -> int:
    definition.fill(case)
    run()
    wrong = np.array([definition.wrong(case, name)], dtype=np.int64)
    C.allreduce(wrong, comm=comm, check=False)
    zero(case.x)
    return int(wrong[0])


def _ratios(rows: list[dict]) -> None:
    """busbw as a multiple of the MPI library's at the same size (time ratio when busbw is 0)."""
    mpi = next((r for r in rows if r["algo"] == "mpi"), None)
    for row in rows:
        if mpi is None:
            row["ratio"] = None
        elif mpi["busbw"] > 0:
            row["ratio"] = row["busbw"] / mpi["busbw"]
        else:
            row["ratio"] = mpi["time_us"] / row["time_us"] if row["time_us"] else None
