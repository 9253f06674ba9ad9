"""`python -m bench soak`: 10,000 mixed collectives, and each rank's memory (RSS) along the way.

A leak of a few kilobytes per call (a request never freed, a segment made per call instead
of reused, a handle kept in a dict, a future never collected) is invisible in a test of a
hundred calls and ends a training run of a million. So every rank runs the same long
deterministic mix of

    numpy         allreduce by every flat algorithm, reduce_scatter, allgather, broadcast and
                  reduce (ring and direct, roots in turn), allreduce_coalesced, and allreduces
                  of buffers from collectives.empty (shared memory, made and freed per call);
                  lengths 1 to 65539 elements, float32 and int64, over shared memory and over
                  MPI point to point in turn
    torch         all_reduce, all_gather_into_tensor, reduce_scatter_tensor and broadcast
                  with async_op=True through the ringps backend: up to 4 in flight on the
                  group's thread while the numpy ones run on the main thread

checks every result (exact: small integers), and records its resident set size after the
first call and every `--every` calls. After `--warmup-calls` (default 1000: every kind of
call has run at every size by then, so segments have grown to their final size) the RSS
must stay within `--tolerance` (10%) of its value there, on every rank.

Writes soak.csv (calls, rank, rss_bytes) and results.json under
results/<timestamp>-soak/ and prints a table of RSS per rank in MiB; exits 1 if a rank's
memory was not flat (or, with --leak-kib, shows that it would say so).
"""
from __future__ import annotations

import gc
import os
import sys
import time

import numpy as np

import collectives as C

from . import results, tables

SIZES = (1, 3, 1000, 4099, 65539)         # elements: tiny, around p, primes, 256 KB
DTYPES = ("float32", "int64")
ASYNC_IN_FLIGHT = 4
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm (resident pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def pattern(count: int, dtype: str) -> np.ndarray:
    """1..7 repeated: sums over 5 ranks stay exact in float32 and int64."""
    return (np.arange(count) % 7 + 1).astype(dtype)


class Mix:
    """The deterministic sequence of collectives every rank runs; call `step(i)` for i = 0, 1,
    ... Each step is exactly one collective; results are checked, torch ones when waited."""

    def __init__(self, comm, use_torch: bool, leak_kib: int = 0):
        from collectives.comm import Communicator
        self.comm, self.rank, self.size = comm, comm.rank, comm.size
        self.comms = [Communicator(comm.mpi, timeout=comm.timeout, servers=0, transport=t,
                                   _node_of_rank=comm.node_of_rank) for t in ("shm", "mpi")]
        self.algorithms = C.flat_algorithms()
        self.pending: list = []            # (torch Work, check) in issue order
        self.leak_kib, self.leaked = leak_kib, []
        self.kinds = [self.allreduce, self.reduce_scatter, self.allgather, self.broadcast,
                      self.reduce, self.shared_allreduce, self.coalesced]
        if use_torch:
            self.torch, self.dist = _torch_world()
            # torch 2.13 renamed *_into_tensor / *_tensor to *_single (the old names warn)
            self.all_gather_single = getattr(self.dist, "all_gather_single", None) or \
                self.dist.all_gather_into_tensor
            self.reduce_scatter_single = getattr(self.dist, "reduce_scatter_single", None) or \
                self.dist.reduce_scatter_tensor
            self.kinds += [self.torch_all_reduce, self.torch_all_gather,
                           self.torch_reduce_scatter, self.torch_broadcast]

    # -- what changes from call to call -----------------------------------------------------
    def step(self, i: int) -> None:
        kind = self.kinds[i % len(self.kinds)]
        turn = i // len(self.kinds)
        count = SIZES[turn % len(SIZES)]
        dtype = DTYPES[(turn // (2 * len(SIZES))) % len(DTYPES)]   # every size on both comms
        comm = self.comms[turn % len(self.comms)]
        kind(turn, count, dtype, comm)
        if self.leak_kib:                   # a planted leak, to show the soak catches one
            self.leaked.append(np.ones(self.leak_kib * 1024, np.uint8))

    def fail(self, what: str, got, want) -> None:
        got, want = np.asarray(got), np.asarray(want)
        bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
        raise AssertionError(f"soak: rank {self.rank}: {what}: {bad.size} of {want.size} "
                             f"elements wrong, first at [{bad[0]}]: got {got.reshape(-1)[bad[0]]}"
                             f", want {want.reshape(-1)[bad[0]]}")

    def expect(self, what: str, got, want) -> None:
        if not np.array_equal(np.asarray(got), np.asarray(want)):
            self.fail(what, got, want)

    @property
    def total(self) -> int:
        return self.size * (self.size + 1) // 2

    # -- numpy collectives ------------------------------------------------------------------
    def allreduce(self, turn, count, dtype, comm):
        algorithm = self.algorithms[turn % len(self.algorithms)]
        x = pattern(count, dtype) * (self.rank + 1)
        C.allreduce(x, algorithm=algorithm, comm=comm)
        self.expect(f"allreduce {algorithm} {count} {dtype}", x, pattern(count, dtype) * self.total)

    def reduce_scatter(self, turn, count, dtype, comm):
        algorithm = ("ring", "direct")[turn % 2]
        x = pattern(count, dtype) * (self.rank + 1)
        mine = C.reduce_scatter(x, op="max", algorithm=algorithm, comm=comm)
        a, b = C.chunk(count, comm=comm)
        self.expect(f"reduce_scatter {algorithm} {count}", mine,
                    pattern(count, dtype)[a:b] * self.size)

    def allgather(self, turn, count, dtype, comm):
        algorithm = ("ring", "direct")[turn % 2]
        owner = np.zeros(count, dtype)
        for q in range(self.size):
            a, b = C.chunk(count, rank=q, comm=comm)
            owner[a:b] = q + 1
        x = np.zeros(count, dtype)
        a, b = C.chunk(count, comm=comm)
        x[a:b] = self.rank + 1
        C.allgather(x, algorithm=algorithm, comm=comm)
        self.expect(f"allgather {algorithm} {count}", x, owner)

    def broadcast(self, turn, count, dtype, comm):
        algorithm, root = ("ring", "direct")[turn % 2], turn % self.size
        x = pattern(count, dtype) * (self.rank + 1)
        C.broadcast(x, root=root, algorithm=algorithm, comm=comm)
        self.expect(f"broadcast {algorithm} root {root} {count}", x,
                    pattern(count, dtype) * (root + 1))

    def reduce(self, turn, count, dtype, comm):
        algorithm, root = ("ring", "direct")[turn % 2], (turn + 1) % self.size
        x = pattern(count, dtype) * (self.rank + 1)
        C.reduce(x, root=root, algorithm=algorithm, comm=comm)
        want = self.total if self.rank == root else self.rank + 1
        self.expect(f"reduce {algorithm} root {root} {count}", x, pattern(count, dtype) * want)

    def shared_allreduce(self, turn, count, dtype, comm):
        """A buffer in this rank's shared segment, made for this call and dropped after it."""
        x = C.empty(count, dtype, comm=comm)
        x[:] = pattern(count, dtype) * (self.rank + 1)
        C.allreduce(x, algorithm=self.algorithms[-turn % len(self.algorithms)], comm=comm)
        self.expect(f"allreduce of a shared buffer {count}", x, pattern(count, dtype) * self.total)

    def coalesced(self, turn, count, dtype, comm):
        parts = [pattern(count, dtype) * (self.rank + 1), np.full(3, self.rank + 1.0),
                 np.zeros(0, np.float32)]
        C.allreduce_coalesced(parts, comm=comm)
        self.expect(f"allreduce_coalesced {count}", parts[0], pattern(count, dtype) * self.total)
        self.expect("allreduce_coalesced (second tensor)", parts[1], np.full(3, float(self.total)))

    # -- torch, asynchronous ----------------------------------------------------------------
    def _issue(self, work, check) -> None:
        self.pending.append((work, check))
        if len(self.pending) > ASYNC_IN_FLIGHT:
            self.drain(1)

    def drain(self, keep: int = 0) -> None:
        """Wait for (and check) the oldest async works until at most `keep` are in flight."""
        while len(self.pending) > keep:
            work, check = self.pending.pop(0)
            work.wait()
            check()

    def torch_all_reduce(self, turn, count, dtype, comm):
        torch = self.torch
        t = torch.from_numpy(pattern(count, dtype) * (self.rank + 1))
        work = self.dist.all_reduce(t, async_op=True)
        self._issue(work, lambda: self.expect(f"torch all_reduce {count} {dtype}", t.numpy(),
                                              pattern(count, dtype) * self.total))

    def torch_all_gather(self, turn, count, dtype, comm):
        torch = self.torch
        mine = torch.full((count,), self.rank + 1, dtype=getattr(torch, dtype))
        out = torch.empty(count * self.size, dtype=mine.dtype)
        work = self.all_gather_single(out, mine, async_op=True)
        want = np.repeat(np.arange(1, self.size + 1), count).astype(dtype)
        self._issue(work, lambda: self.expect(f"torch all_gather_into_tensor {count}",
                                              out.numpy(), want))

    def torch_reduce_scatter(self, turn, count, dtype, comm):
        torch = self.torch
        full = np.tile(pattern(count, dtype), self.size) * (self.rank + 1)
        out = torch.empty(count, dtype=getattr(torch, dtype))
        work = self.reduce_scatter_single(out, torch.from_numpy(full), async_op=True)
        self._issue(work, lambda: self.expect(f"torch reduce_scatter_tensor {count}",
                                              out.numpy(), pattern(count, dtype) * self.total))

    def torch_broadcast(self, turn, count, dtype, comm):
        torch = self.torch
        root = turn % self.size
        t = torch.from_numpy(pattern(count, dtype) * (self.rank + 1))
        work = self.dist.broadcast(t, src=root, async_op=True)
        self._issue(work, lambda: self.expect(f"torch broadcast root {root} {count}", t.numpy(),
                                              pattern(count, dtype) * (root + 1)))


def _torch_world():
    """(torch, torch.distributed) on the ringps backend (every rank: importing the backend
    is collective under mpiexec)."""
    import torch
    import torch.distributed as dist

    import collectives.torch_backend  # noqa: F401
    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group("ringps")
    return torch, dist


def checkpoints(calls: int, every: int) -> list[int]:
    """After the first call, then every `every` calls, and at the end."""
    return sorted({1, calls, *range(every, calls + 1, every)})


def soak(comm, args) -> dict:
    """Run the mix; every rank returns {calls: rss_bytes} and the seconds it took."""
    mix = Mix(comm, use_torch=not args.no_torch, leak_kib=args.leak_kib)
    marks = checkpoints(args.calls, args.every)
    samples, start = {}, time.perf_counter()
    bar = _progress(comm, args)
    for i in range(args.calls):
        mix.step(i)
        done = i + 1
        if done in marks:
            mix.drain()
            gc.collect()
            samples[done] = rss_bytes()
            if bar is not None:
                bar.update(done - bar.n)
    mix.drain()
    if bar is not None:
        bar.close()
    comm.barrier()
    return {"rss": samples, "seconds": time.perf_counter() - start}


def _progress(comm, args):
    if comm.rank != 0 or args.quiet or args.json:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=args.calls, desc="soak", unit="call", file=sys.stderr, leave=False,
                dynamic_ncols=True)


def verdict(per_rank: list[dict], reference: int, tolerance: float) -> list[dict]:
    """Per rank: RSS at the reference call, at the end, the largest excursion after the
    reference, and whether it stayed within tolerance."""
    out = []
    for rank, samples in enumerate(per_rank):
        base = samples[reference]
        after = [v for calls, v in samples.items() if calls >= reference]
        end = samples[max(samples)]
        worst = max(after, key=lambda v: abs(v - base))
        calls = max(samples) - reference
        out.append({"rank": rank, "reference_calls": reference, "rss_reference": base,
                    "rss_end": end, "growth": (end - base) / base,
                    "bytes_per_call": (end - base) / calls if calls else 0.0,
                    "worst_growth": (worst - base) / base,
                    "flat": abs(worst - base) <= tolerance * base})
    return out


def run(comm, args) -> int:
    measured = soak(comm, args)
    gathered = comm.mpi.gather(measured, root=0)
    if comm.rank != 0:
        return 0
    per_rank = [m["rss"] for m in gathered]
    seconds = max(m["seconds"] for m in gathered)
    reference = min(c for c in per_rank[0] if c >= min(args.warmup_calls, args.calls))
    ranks = verdict(per_rank, reference, args.tolerance)
    flat = all(r["flat"] for r in ranks)
    rows = [{"calls": calls, "rank": rank, "rss_bytes": rss}
            for rank, samples in enumerate(per_rank) for calls, rss in sorted(samples.items())]
    folder = results.new_folder(args.out, "soak")
    results.write_csv(folder / "soak.csv", rows, ["calls", "rank", "rss_bytes"])
    command = "python -m bench " + " ".join(sys.argv[1:])
    results.write_json(folder / "results.json", {
        "command": command, "ranks": comm.size, "calls": args.calls, "every": args.every,
        "torch": not args.no_torch, "leak_kib": args.leak_kib, "seconds": seconds,
        "calls_per_second": args.calls / seconds, "tolerance": args.tolerance,
        "reference_calls": reference, "flat": flat, "per_rank": ranks, "rows": rows})
    if args.json:
        for row in ranks:
            print(results.json_line(row))
    elif not args.quiet:
        print(report(per_rank, ranks, args, comm.size, seconds))
        print(f"# results: {folder}")
    if not flat:
        grew = ", ".join(f"rank {r['rank']} {r['worst_growth']:+.1%}" for r in ranks
                         if not r["flat"])
        print(f"soak: FAILED: memory not flat within {args.tolerance:.0%} after call "
              f"{reference}: {grew}", file=sys.stderr)
        return 1
    return 0


def report(per_rank: list[dict], ranks: list[dict], args, size: int, seconds: float) -> str:
    mib = 1 << 20
    calls = sorted(per_rank[0])
    body = [[c] + [f"{samples[c] / mib:.1f}" for samples in per_rank] for c in calls]
    body.append([f"growth from {ranks[0]['reference_calls']}"]
                + [f"{r['growth']:+.1%}" for r in ranks])
    body.append(["worst after it"] + [f"{r['worst_growth']:+.1%}" for r in ranks])
    body.append(["bytes per call"] + [f"{r['bytes_per_call']:+.0f}" for r in ranks])
    head = (f"# soak: {args.calls} mixed collectives on {size} ranks "
            f"({'numpy and async torch' if not args.no_torch else 'numpy only'}) in "
            f"{seconds:.0f} s ({args.calls / seconds:.0f} calls/s); RSS in MiB per rank, "
            f"flat = within {args.tolerance:.0%} of call {ranks[0]['reference_calls']}")
    verdicts = "flat: " + ", ".join(f"rank {r['rank']} {'yes' if r['flat'] else 'NO'}"
                                    for r in ranks)
    return (f"{head}\n{tables.text_table(['calls'] + [f'rank {r}' for r in range(size)], body)}"
            f"\n# {verdicts}")
