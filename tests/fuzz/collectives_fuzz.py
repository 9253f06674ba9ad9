"""Fuzz every collective under mpiexec: hypothesis draws the cases, every rank runs them.

The hand-written suites (tests/mpi/) fix the combinations they try; a bug that needs an odd
length, a particular root, a pipeline segment smaller than an element and the MPI
transport at once slips through them. Here hypothesis draws the collective, the algorithm,
the dtype, the op, the root, the length (0, 1, p-1, p, p+1, primes and random ones), the
segment size, the buffer kind (numpy, torch, or memory from `collectives.empty`), the
metadata check and the transport (shared memory, MPI point-to-point, or both: pretend nodes
of two ranks, shared memory inside and MPI across) for hundreds of collectives per job, and
each result is compared with a float64 (or exact) reference.

Every rank must call the same collectives in the same order, so only rank 0 runs
hypothesis: it sends each drawn case to the other ranks on a control communicator of its
own, every rank runs it on its own rank-distinct input (drawn from (seed, rank), so each can
compute the reference from all ranks' inputs without trusting the collective), and rank 0
gathers what every rank saw. A wrong value or an exception on any rank fails the case with
the rank named, and hypothesis shrinks it the same way, so the report is a minimal case.
The hypothesis seed is printed first; `--seed` (or RINGPS_FUZZ_SEED) replays a run.

    RINGPS_SHM_MIN_BYTES=0 mpiexec -n 3 python tests/fuzz/collectives_fuzz.py --examples 500 \
        --seed 1234            # shared-memory cases then use shared memory for every message

A collective that never returns on some rank ends in PeerTimeout after RINGPS_TIMEOUT
seconds there (tests/test_fuzz.py sets it low), which fails the case like a wrong value.
The run stops there, unshrunk: a timed-out communicator refuses further use.

Transports: shm, mpi and `mixed` (pretend nodes of two ranks: shared memory inside, MPI
across), all three by default (`--transports` picks).
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))      # reference.py

import collectives as C  # noqa: E402
from collectives.errors import InputError  # noqa: E402
from reference import (TORCH_ONLY, assert_close, expected, inputs, make_buffer,  # noqa: E402
                       tolerance)

COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce")
REDUCING = ("allreduce", "reduce_scatter", "reduce")
TRANSPORTS = ("shm", "mpi", "mixed")    # mixed: pretend nodes of 2 ranks, shm inside, MPI across
DEFAULT_TRANSPORTS = "shm,mpi,mixed"
KINDS = ("numpy", "torch", "shared")
PRIMES = (2, 3, 5, 7, 11, 13, 17, 31, 97, 101, 257, 1009, 4099, 10007, 65537, 100_003)
SEGMENTS = (1, 3, 8, 64, 1000, 4096, 1 << 16)
MOST_MESSAGES = 512        # pipeline segments per case: tiny segments only on short buffers
STOP = None
SHOWN_FAILURES = 3         # failing cases printed as they happen (hypothesis reports the last)


@dataclass(frozen=True)
class Case:
    collective: str
    algorithm: str
    dtype: str
    op: str | None
    root: int
    count: int
    segment_bytes: int | None
    kind: str
    check: bool
    transport: str
    seed: int

    @property
    def rejected(self) -> bool:
        """avg of integers is refused by design (it would truncate): every rank must say so."""
        return self.op == "avg" and not self.dtype.startswith(("float", "bfloat"))

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self).items())


def algorithms(collective: str) -> list[str]:
    """Every registered algorithm of `collective` that runs without server ranks."""
    return [a for a in C.COLLECTIVES[collective] if a not in C.NEED_SERVERS]


def itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def special_counts(ranks: int, most: int) -> list[int]:
    """Lengths where chunking goes wrong first: empty, one, around the rank count, primes."""
    near = {0, 1, max(ranks - 1, 0), ranks, ranks + 1, 2 * ranks - 1, 2 * ranks + 1}
    return sorted(c for c in near | set(PRIMES) if c <= most)


def case_strategy(ranks: int, most_count: int, transports=TRANSPORTS, only: str | None = None,
                  torch: bool = True):
    """A hypothesis strategy drawing one Case for a job of `ranks` ranks over `transports`
    (with `only`: just allreduces by that algorithm; without `torch`: no bfloat16 and no
    torch tensors, so the job need not import torch)."""
    dtypes = [d for d in C.DTYPE_NAMES if torch or d not in TORCH_ONLY]
    kinds = [k for k in KINDS if torch or k != "torch"]
    from hypothesis import strategies as st

    @st.composite
    def cases(draw):
        collective = draw(st.sampled_from(("allreduce",) if only else COLLECTIVES))
        algorithm = only or draw(st.sampled_from(algorithms(collective)))
        dtype = draw(st.sampled_from(dtypes))
        op = draw(st.sampled_from(C.OP_NAMES)) if collective in REDUCING else None
        root = draw(st.integers(0, ranks - 1)) if collective in ("broadcast", "reduce") else 0
        count = draw(st.one_of(st.sampled_from(special_counts(ranks, most_count)),
                               st.integers(0, most_count)))
        fits = [s for s in SEGMENTS if count * itemsize(dtype) <= s * MOST_MESSAGES]
        segment_bytes = draw(st.sampled_from([None, *fits]))
        return Case(collective, algorithm, dtype, op, root, count, segment_bytes,
                    kind=draw(st.sampled_from(kinds)), check=draw(st.booleans()),
                    transport=draw(st.sampled_from(transports)),
                    seed=draw(st.integers(0, 2 ** 31 - 1)))
    return cases()


# -- running one case on every rank ---------------------------------------------------------

def make_comms() -> dict:
    """One communicator per transport (collective: every rank builds them together)."""
    return {"shm": C.Communicator(transport="shm"), "mpi": C.Communicator(transport="mpi"),
            "mixed": C.Communicator(transport="auto", ranks_per_node=2)}


def build_buffer(values: np.ndarray, case: Case, comm):
    """This rank's input as the kind of buffer the case asks for."""
    if case.kind == "shared":
        buf = C.empty(case.count, case.dtype, comm=comm)
        filled = make_buffer(values, case.dtype)
        buf.copy_(filled) if hasattr(buf, "copy_") else np.copyto(buf, filled)
        return buf
    return make_buffer(values, case.dtype, "torch" if case.kind == "torch" else "numpy")


def run_case(case: Case, comm) -> None:
    """Run `case` on this rank and check the result; raises AssertionError if it is wrong."""
    p, r = comm.size, comm.rank
    values = inputs(case.dtype, case.op or "sum", case.count, case.seed, p)
    what = f"rank {r}: {case.collective} {case.algorithm} {case.op or ''} {case.dtype} " \
           f"count={case.count} root={case.root} over {case.transport}"
    options = {"algorithm": case.algorithm, "comm": comm, "check": case.check,
               "segment_bytes": case.segment_bytes}
    if case.collective == "allgather":
        run_allgather(case, comm, values, options, what)
        return
    buf = build_buffer(values[r], case, comm)
    if case.rejected:
        expect_rejection(case, buf, options, what)
        return
    if case.collective == "allreduce":
        out = C.allreduce(buf, op=case.op, **options)
        assert out is buf, f"{what}: allreduce returned a different object"
        assert_close(buf, expected(values, case.op), tolerance(values, case.op, case.dtype), what)
    elif case.collective == "reduce_scatter":
        mine = C.reduce_scatter(buf, op=case.op, **options)
        a, b = C.chunk(case.count, comm=comm)
        tol = tolerance(values, case.op, case.dtype)
        assert_close(mine, expected(values, case.op)[a:b], tol[a:b] if np.ndim(tol) else tol,
                     what)
    elif case.collective == "broadcast":
        C.broadcast(buf, root=case.root, **options)
        assert_close(buf, values[case.root], 0.0, what)
    else:
        C.reduce(buf, op=case.op, root=case.root, **options)
        if r == case.root:
            assert_close(buf, expected(values, case.op),
                         tolerance(values, case.op, case.dtype), what)
        else:
            assert_close(buf, values[r], 0.0, what + " (a non-root buffer changed)")


def run_allgather(case: Case, comm, values, options, what) -> None:
    """This rank's chunk is its own; the rest starts as junk and must be overwritten."""
    bounds = [C.chunk(case.count, rank=q, comm=comm) for q in range(comm.size)]
    want = np.concatenate([values[q][a:b] for q, (a, b) in enumerate(bounds)]) \
        if case.count else values[0]
    junk = inputs(case.dtype, "sum", case.count, case.seed ^ 0x5EED, comm.size)[comm.rank]
    a, b = bounds[comm.rank]
    junk[a:b] = values[comm.rank][a:b]
    buf = build_buffer(junk, case, comm)
    assert C.allgather(buf, **options) is buf, f"{what}: allgather returned a different object"
    assert_close(buf, want, 0.0, what)


def expect_rejection(case: Case, buf, options, what) -> None:
    call = getattr(C, case.collective)
    extra = {"root": case.root} if case.collective == "reduce" else {}
    try:
        call(buf, op=case.op, **options, **extra)
    except InputError as exc:
        assert "op 'avg' is not defined" in str(exc), f"{what}: wrong rejection: {exc}"
        return
    raise AssertionError(f"{what}: avg of {case.dtype} ran instead of being rejected")


def outcome_of(case: Case, comm) -> tuple[str | None, bool]:
    """(None or what went wrong on this rank, whether the communicators must be rebuilt)."""
    try:
        run_case(case, comm)
        return None, False
    except AssertionError as exc:
        return str(exc), False
    except Exception as exc:           # the collective itself failed: its comm may be unusable
        return f"rank {comm.rank}: {type(exc).__name__}: {exc}", True


# -- rank 0 drives, the others follow -------------------------------------------------------

class CommunicatorsBroken(BaseException):
    """A collective raised instead of returning (a timeout, say): the communicators it ran
    on are unusable and, until the transports keep the buffers of receives still posted
    alive, the process may not be memory-safe either (tests/fuzz/repro_after_timeout.py).
    A BaseException, so hypothesis stops at once instead of shrinking through more of them."""


class Driver:
    """Rank 0's side: send a case to every rank, run it here too, gather the outcomes."""

    def __init__(self, control, comms: dict, trace: bool = False):
        self.control, self.comms, self.trace = control, comms, trace
        self.ran: Counter = Counter()

    def __call__(self, case: Case) -> None:
        if self.trace:
            print(f"fuzz case {self.ran['total'] + 1}: {case.describe()}", flush=True)
        self.control.bcast(case, root=0)
        outcome, broken = outcome_of(case, self.comms[case.transport])
        outcomes = self.control.gather((outcome, broken), root=0)
        self.count(case)
        failures = [text for text, _ in outcomes if text]
        if failures and self.ran["failed"] < SHOWN_FAILURES:
            # shown now as well: a rank that crashes in a later case would take them along
            print(f"fuzz: case {self.ran['total']} failed ({case.describe()}):\n"
                  + "\n".join(failures), flush=True)
        self.ran["failed"] += bool(failures)
        if any(b for _, b in outcomes):
            raise CommunicatorsBroken(f"case {self.ran['total']} ({case.describe()}) broke "
                                      f"the communicators:\n" + "\n".join(failures))
        if failures:
            raise AssertionError(f"{len(failures)} of {len(outcomes)} ranks failed "
                                 f"({case.describe()}):\n" + "\n".join(failures))

    def count(self, case: Case) -> None:
        self.ran["total"] += 1
        self.ran[case.collective] += 1
        self.ran[case.transport] += 1
        self.ran["rejected" if case.rejected else "checked"] += 1


def follow(control, comms: dict) -> None:
    """The other ranks: run whatever rank 0 sends until it says stop."""
    while True:
        case = control.bcast(None, root=0)
        if case is STOP:
            return
        control.gather(outcome_of(case, comms[case.transport]), root=0)


def drive(control, comms: dict, args) -> int:
    from hypothesis import HealthCheck, given, seed, settings
    ranks = control.size
    driver = Driver(control, comms, args.trace)

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(case=case_strategy(ranks, args.max_count, args.transports,
                              "planted" if args.plant else None, torch=not args.no_torch))
    def fuzz(case):
        driver(case)

    print(f"fuzz: {ranks} ranks, seed {args.seed} (replay: --seed {args.seed} or "
          f"RINGPS_FUZZ_SEED={args.seed}), {args.examples} examples, lengths up to "
          f"{args.max_count}, transports {','.join(args.transports)}", flush=True)
    start = time.perf_counter()
    failed = False
    try:
        fuzz()
    except CommunicatorsBroken as exc:
        failed = True
        print(f"fuzz: FAILED on {ranks} ranks (seed {args.seed}), stopped: {exc}", flush=True)
    except Exception as exc:
        failed = True
        notes = "\n".join(getattr(exc, "__notes__", []))     # hypothesis: the shrunk example
        print(f"fuzz: FAILED on {ranks} ranks (seed {args.seed}): {exc}\n{notes}", flush=True)
    finally:
        control.bcast(STOP, root=0)
    seconds = time.perf_counter() - start
    ran = driver.ran
    print(f"fuzz: {ran['total']} collectives on {ranks} ranks in {seconds:.1f} s "
          f"({', '.join(f'{c} {ran[c]}' for c in COLLECTIVES)}; "
          f"shm {ran['shm']}, mpi {ran['mpi']}, mixed {ran['mixed']}; {ran['checked']} checked "
          f"against the reference, {ran['rejected']} rightly rejected)", flush=True)
    return 1 if failed else 0


def parse(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int,
                   default=int(os.environ.get("RINGPS_FUZZ_EXAMPLES", 200)),
                   help="cases hypothesis draws (default RINGPS_FUZZ_EXAMPLES, else 200)")
    p.add_argument("--seed", type=int, default=None,
                   help="hypothesis seed (default RINGPS_FUZZ_SEED, else random; printed)")
    p.add_argument("--max-count", type=int,
                   default=int(os.environ.get("RINGPS_FUZZ_MAX_COUNT", 5000)),
                   help="longest buffer drawn, in elements (default 5000)")
    p.add_argument("--transports", type=lambda text: [t for t in text.split(",") if t],
                   default=os.environ.get("RINGPS_FUZZ_TRANSPORTS", DEFAULT_TRANSPORTS),
                   help=f"drawn from {','.join(TRANSPORTS)} (default RINGPS_FUZZ_TRANSPORTS, "
                   f"else {DEFAULT_TRANSPORTS})")
    p.add_argument("--no-torch", action="store_true",
                   help="no bfloat16 and no torch tensors (the job starts without torch)")
    p.add_argument("--trace", action="store_true",
                   help="print each case before running it (to find one that crashes a rank)")
    p.add_argument("--plant", choices=("wrong", "silent"),
                   help="fuzz only a deliberately broken allreduce (tests/fuzz/planted.py), "
                   "to show that a bug is caught, shrunk and its rank named")
    args = p.parse_args(argv)
    unknown = set(args.transports) - set(TRANSPORTS)
    if unknown or not args.transports:
        p.error(f"--transports: unknown {', '.join(sorted(unknown)) or 'none given'} "
                f"(known: {', '.join(TRANSPORTS)})")
    if args.seed is None:
        args.seed = int(os.environ.get("RINGPS_FUZZ_SEED") or random.randrange(2 ** 32))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    faulthandler.enable()             # a crashing rank prints its Python stack
    if not args.no_torch:
        import torch  # noqa: F401  (bfloat16 and torch buffers; imported once, up front)
    if args.plant:
        import planted
        planted.plant(args.plant)
        C.ALGORITHMS.register("planted", "planted")
    control = MPI.COMM_WORLD.Dup()
    comms = make_comms()
    if control.rank == 0:
        code = drive(control, comms, args)
    else:
        follow(control, comms)
        code = 0
    control.Barrier()
    return code


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        # Abort, not exit: the exit status of one rank leaving without MPI_Finalize is not
        # reliably mpiexec's, and after a timed-out case Finalize could wait for requests
        # to a rank that never answered.
        MPI.COMM_WORLD.Abort(code)
    sys.exit(0)
