"""Run tests/mpi/ under mpiexec on 1..5 local ranks, many cases per launch.

A failing case on any rank aborts the job (tests/mpi/conftest.py); this test then fails
with the job's output, which names the rank and the reason."""
import pytest

from mpirun import run

SUITE_TIMEOUT = 600


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5])
def test_mpi_suite(ranks):
    rc, out = run(ranks, ["-m", "pytest", "tests/mpi", "-q", "-x", "-p", "no:cacheprovider",
                          "--timeout", "300"],
                  timeout=SUITE_TIMEOUT)
    assert rc == 0, f"mpiexec -n {ranks} pytest tests/mpi failed (rc={rc}):\n{out[-6000:]}"
