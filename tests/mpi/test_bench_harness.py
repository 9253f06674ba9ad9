"""bench's harness under real ranks: the #wrong column catches a broken algorithm and passes
correct ones and the baselines; timings are produced but never asserted."""
import pytest

import collectives as C
from bench.baselines import MPIBaseline
from bench.definitions import DEFINITIONS, reduced, zero
from bench.harness import measure
from bench.sweep import run_sweep


@pytest.fixture
def broken():
    C.ALGORITHMS.register("broken", "broken_algorithm")
    yield "broken"
    C.ALGORITHMS.unregister("broken")


def test_wrong_column_catches_a_broken_algorithm(comm, broken):
    rows = run_sweep(comm, DEFINITIONS["allreduce"], [1024, 4096], algorithms=["ring", broken],
                     baselines=[MPIBaseline(comm)], iters=2, warmup=1)
    by_algo = {(r["algo"], r["bytes"]): r for r in rows}
    for nbytes in (1024, 4096):
        assert by_algo[("ring", nbytes)]["wrong"] == 0
        assert by_algo[("mpi", nbytes)]["wrong"] == 0
        assert by_algo[("broken", nbytes)]["wrong"] == (comm.size if comm.size > 1 else 0)


@pytest.mark.parametrize("collective", list(DEFINITIONS))
@pytest.mark.parametrize("dtype,op", [("float32", "sum"), ("float16", "max"), ("int8", "prod"),
                                      ("float64", "avg"), ("uint8", "min")])
def test_every_collective_and_baseline_checks_clean(comm, collective, dtype, op):
    definition = DEFINITIONS[collective]
    rows = run_sweep(comm, definition, [4 * 1024 + 12], dtype=dtype, op=op,
                     algorithms=[a for a in C.COLLECTIVES[collective] if a not in C.NEED_SERVERS], baselines=[MPIBaseline(comm)],
                     iters=1, warmup=0)
    assert [r["wrong"] for r in rows] == [0] * len(rows), rows
    n = comm.size
    factor = {"allreduce": 2 * (n - 1) / n, "reduce_scatter": (n - 1) / n,
              "allgather": (n - 1) / n, "broadcast": 1.0}[collective] if n > 1 else \
        (1.0 if collective == "broadcast" else 0.0)
    for row in rows:
        algbw = row["bytes"] / (row["time_us"] * 1e-6) / 1e9
        assert row["algbw"] == pytest.approx(algbw) and row["busbw"] == pytest.approx(algbw * factor)


@pytest.mark.parametrize("collective", list(DEFINITIONS))
def test_check_catches_an_implementation_that_returns_zeros(comm, collective):
    """No collective's check may pass an all-zero result (prod included, on any rank count)."""
    definition = DEFINITIONS[collective]
    for dtype, op in [("float32", "prod"), ("int8", "sum"), ("uint8", "prod")]:
        case = definition.case(comm, 1000, dtype, op)
        zero(case.x)
        assert definition.wrong(case, "zeros") > 0, (collective, dtype, op)


def test_measure_reports_the_slowest_rank(comm):
    import time
    timing = measure(lambda: time.sleep(0.002 * (comm.rank + 1)), comm, iters=3, warmup=0)
    assert timing.min >= 0.002 * comm.size          # every iteration waited for the last rank
    assert timing.min <= timing.median <= timing.max


def test_integer_references_wrap_like_the_dtype():
    want, tolerance = reduced(40, 0, 64, "sum", "int8")      # 40 ranks overflow int8
    assert tolerance == 0.0 and want.min() >= -128 and want.max() <= 127
    want, _ = reduced(9, 0, 64, "prod", "int8")
    assert (want != 0).all()


def test_candidates_are_timed_in_turns(comm):
    """7 iterations over 5 rounds (2, 2, 1, 1, 1 each), 2 warm-up calls before the first
    round and 1 before each later one, round k starting at run k mod 2:
    a a a a b b b b | b b b a a a | a a b b | b b a a | a a b b, and each timing has 7
    iterations."""
    from bench.harness import interleaved
    calls, finished = [], []
    timings = interleaved([lambda: calls.append("a"), lambda: calls.append("b")], comm,
                          iters=7, warmup=2, done=finished.append)
    assert "".join(calls) == "aaaabbbb" + "bbbaaa" + "aabb" + "bbaa" + "aabb"
    assert [t.iters for t in timings] == [7, 7] and finished == [0, 1]
    assert all(t.min <= t.median <= t.max for t in timings)
