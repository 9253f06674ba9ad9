"""Serial tests run in-process; tests/mpi/ runs only under mpiexec (tests/test_mpi_suite.py
launches it for 1..5 ranks), so a plain `pytest tests` does not collect it directly."""
import os

collect_ignore = [] if os.environ.get("RINGPS_UNDER_MPIEXEC") else ["mpi", "scenarios"]


def pytest_configure(config):
    config.addinivalue_line("markers", "killed_by_the_test: the job is one the test kills "
                            "itself (it then removes the MPI library's /dev/shm files)")
