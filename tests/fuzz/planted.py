"""Deliberately broken allreduces, registered only by `collectives_fuzz.py --plant`, so that
tests/test_fuzz.py can show the fuzzer catches a bug, names the rank and shrinks the case.

    wrong    the ring allreduce, then the last rank drops the reduction of its last element
             when the length is odd and above the rank count (a chunking-style bug that
             fixed test sizes could miss)
    silent   rank 1 never joins (a hung peer): the others must end in PeerTimeout naming it
"""
from collectives import ring
from collectives.schedule import Schedule


def wrong_allreduce(x, ctx):
    mine = x[-1:].copy() if x.size else None
    ring.allreduce(x, ctx)
    if ctx.rank == ctx.size - 1 and x.size > ctx.size and x.size % 2 == 1:
        x[-1:] = mine


def silent_allreduce(x, ctx):
    if ctx.rank != 1:
        ring.allreduce(x, ctx)


def allreduce(x, ctx):
    PLANTED(x, ctx)


def allreduce_schedule(n, count, itemsize, root=0):
    return Schedule([])


PLANTED = wrong_allreduce


def plant(kind: str) -> None:
    """Make the `planted` allreduce algorithm behave as `kind` (wrong or silent)."""
    global PLANTED
    PLANTED = {"wrong": wrong_allreduce, "silent": silent_allreduce}[kind]
