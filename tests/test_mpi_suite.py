"""Run tests/mpi/ under mpiexec on 1..5 local ranks, many cases per launch, over both
transports: shared memory inside the node (RINGPS_TRANSPORT=shm: every test, so a silent
fall-back to MPI would fail; RINGPS_SHM_MIN_BYTES=0, so even one-byte messages take it) and
MPI point-to-point alone (the collective tests).

A failing case on any rank aborts the job (tests/mpi/conftest.py); this test then fails
with the job's output, which names the rank and the reason."""
import pytest

from mpirun import run

SUITE_TIMEOUT = 1200
COLLECTIVE_TESTS = ["tests/mpi/test_allreduce.py", "tests/mpi/test_primitives.py",
                    "tests/mpi/test_schedules.py", "tests/mpi/test_errors.py",
                    "tests/mpi/test_comm.py", "tests/mpi/test_shm.py",
                    "tests/mpi/test_bad_arguments.py"]


@pytest.mark.parametrize("transport", ["shm", "mpi"])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5])
def test_mpi_suite(ranks, transport):
    paths = ["tests/mpi"] if transport == "shm" else COLLECTIVE_TESTS
    rc, out = run(ranks, ["-m", "pytest", *paths, "-q", "-x", "-p", "no:cacheprovider",
                          "--timeout", "300"],
                  timeout=SUITE_TIMEOUT,
                  env={"RINGPS_TRANSPORT": transport, "RINGPS_SHM_MIN_BYTES": "0"})
    assert rc == 0, (f"RINGPS_TRANSPORT={transport} mpiexec -n {ranks} pytest {' '.join(paths)} "
                     f"failed (rc={rc}):\n{_why(out)}")


def _why(out: str) -> str:
    """The lines that say which rank failed and why (they come first and are lost from a
    long tail of thread dumps), then the end of the output."""
    markers = ("[ringps-test]", "Timeout", "Error", "Fatal", "FAILED", "Traceback",
               "ending the job")
    key = [line for line in out.splitlines() if any(m in line for m in markers)]
    return "\n".join(key[:60]) + "\n...\n" + out[-4000:]
