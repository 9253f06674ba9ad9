"""Sync time vs rank count: the same gradient reduced on the first k ranks, k = 1..N, all
in one launch (sub-communicators, like torch's new_group), so the curves of root and host
(linear in k) and blocked and ring (nearly flat) come from one run on one machine. Ranks
outside the first k wait in a barrier, which sleeps once the wait is long (transport
base.pause), leaving the cores to the ranks measured."""
from __future__ import annotations

from .baselines import GlooBaseline, MPIBaseline, Unavailable
from .definitions import DEFINITIONS
from .sweep import run_sweep


def run_scaling(comm, nbytes: int, max_ranks: int, *, dtype, algorithms, iters, warmup,
                use_gloo=True, progress=None, notes=None) -> list[dict]:
    world_gloo = None
    if use_gloo:
        try:
            world_gloo = GlooBaseline(comm)
        except Unavailable as why:
            if notes is not None:
                notes.add(f"gloo: {why}")
    rows = []
    for k in range(1, max_ranks + 1):
        sub = comm.subset(list(range(k)))
        group = world_gloo.subgroup(list(range(k))) if world_gloo else None
        if sub is not None:
            baselines = [MPIBaseline(sub)]
            if world_gloo:
                baselines.append(GlooBaseline(sub, group=group))
            rows += run_sweep(sub, DEFINITIONS["allreduce"], [nbytes], dtype=dtype, op="sum",
                              algorithms=algorithms, baselines=baselines, iters=iters,
                              warmup=warmup, progress=progress, notes=notes)
        comm.barrier()
    return rows
