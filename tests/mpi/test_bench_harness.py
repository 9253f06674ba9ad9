"""bench's harness under real ranks: the #wrong column catches a broken algorithm and passes
correct ones and the baselines; timings are produced but never asserted."""
import pytest

import collectives as C
from bench.baselines import MPIBaseline
from bench.definitions import DEFINITIONS
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
        assert by_algo[("mpi", nbytes)]["ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize("collective", list(DEFINITIONS))
@pytest.mark.parametrize("dtype,op", [("float32", "sum"), ("float16", "max"), ("int8", "prod"),
                                      ("float64", "avg"), ("uint8", "min")])
def test_every_collective_and_baseline_checks_clean(comm, collective, dtype, op):
    definition = DEFINITIONS[collective]
    rows = run_sweep(comm, definition, [4 * 1024 + 12], dtype=dtype, op=op,
                     algorithms=list(C.COLLECTIVES[collective]), baselines=[MPIBaseline(comm)],
                     iters=1, warmup=0)
    assert [r["wrong"] for r in rows] == [0] * len(rows), rows
    for row in rows:
        assert row["busbw"] == pytest.approx(row["algbw"] * definition.busbw_factor(comm.size))


def test_measure_reports_the_slowest_rank(comm):
    import time
    timing = measure(lambda: time.sleep(0.002 * (comm.rank + 1)), comm, iters=3, warmup=0)
    assert timing.min >= 0.002 * comm.size          # every iteration waited for the last rank
    assert timing.min <= timing.median <= timing.max
