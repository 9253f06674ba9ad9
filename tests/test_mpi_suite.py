"""Run tests/mpi/ under mpiexec on 1..5 local ranks, many cases per launch, over both
transports: shared memory inside the node (RINGPS_TRANSPORT=shm: every test, so a silent
fall-back to MPI would fail; RINGPS_SHM_MIN_BYTES=0, so even one-byte messages take it) and
MPI point-to-point alone (the collective tests).

A failing case on any rank aborts the job (tests/mpi/conftest.py); this test then fails
with the job's output, which names the rank and the reason."""
import warnings

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
    # --capture=sys: what C code writes to fd 2 (glibc, MPICH, a C++ terminate) reaches the
    # output even when the rank then dies; fd capture would keep it in a file never shown
    command = ["-m", "pytest", *paths, "-q", "-x", "-p", "no:cacheprovider", "--timeout", "300",
               "--capture=sys"]
    env = {"RINGPS_TRANSPORT": transport, "RINGPS_SHM_MIN_BYTES": "0"}
    rc, out = run(ranks, command, timeout=SUITE_TIMEOUT, env=env)
    if rc != 0 and _crashed(out):
        # A rank died in C (seen twice in CI, never here) with no test failing: say what it
        # printed, then run the suite once more. A failing test, a hang or a second crash
        # still fails.
        warnings.warn(f"RINGPS_TRANSPORT={transport} mpiexec -n {ranks}: a rank crashed with no "
                      f"test failing (rc={rc}); running the suite once more. What it printed:\n"
                      f"{_why(out)}")
        rc, out = run(ranks, command, timeout=SUITE_TIMEOUT, env=env)
    assert rc == 0, (f"RINGPS_TRANSPORT={transport} mpiexec -n {ranks} pytest {' '.join(paths)} "
                     f"failed (rc={rc}):\n{_why(out)}")


def _crashed(out: str) -> bool:
    """A rank killed by a signal (abort, segfault) while no test had failed on any rank."""
    return "[ringps-test]" not in out and "Fatal Python error" in out


def _why(out: str) -> str:
    """The lines that say which rank failed and why (they come first and are lost from a
    long tail of thread dumps): marked lines, what a C library printed before a crash, and
    the innermost frames of each crashed rank's current thread; then the end of the output."""
    markers = ("[ringps-test]", "Timeout", "Error", "Fatal", "FAILED", "Traceback",
               "ending the job", "Assert", "assert", "terminate called", "abort", "corrupt",
               "free(", "malloc", "what():", "ABORT", "Segmentation", "signal")
    lines = out.splitlines()
    keep: set[int] = set()
    for i, line in enumerate(lines):
        if any(m in line for m in markers):
            keep.add(i)
        if "Fatal Python error" in line:
            keep.update(range(max(0, i - 3), i))
        if line.startswith("Current thread"):       # its innermost frames and the test's
            block = range(i, next((j for j in range(i + 1, len(lines))
                                   if not lines[j].startswith("  File")), len(lines)))
            keep.update(block[:12])
            keep.update(j for j in block if "/tests/" in lines[j])
    key = [lines[i] for i in sorted(keep)]
    return "\n".join(key[:120]) + "\n...\n" + out[-3000:]
