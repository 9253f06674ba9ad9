"""Under mpiexec every rank runs the same pytest session in the same order. The first
failing test on any rank prints which rank failed and why, then aborts the whole job:
the peers would otherwise wait forever in the next collective."""
import sys
import zlib

import pytest
from mpi4py import MPI

import collectives as C
from collectives import watchdog

WORLD = MPI.COMM_WORLD


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        sys.stderr.write(f"\n[ringps-test] RANK {WORLD.rank} of {WORLD.size} FAILED "
                         f"{item.nodeid} ({report.when}):\n{report.longreprtext}\n")
        sys.stderr.flush()
        watchdog.end_now(f"{item.nodeid} failed")      # MPI_Abort, no /dev/shm leftovers


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA device (skipped without)")
    if WORLD.rank != 0:                  # one rank reports; failures on any rank still print
        config.option.verbose = -2


@pytest.fixture(scope="session")
def comm():
    return C.init()


@pytest.fixture
def seed(request):
    """A per-test seed; each rank's input is drawn from seed + rank (rank-distinct)."""
    return zlib.crc32(request.node.nodeid.encode())
