"""Serial tests run in-process; tests/mpi/ runs only under mpiexec (tests/test_mpi_suite.py
launches it for 1..5 ranks), so a plain `pytest tests` does not collect it directly."""
import os

collect_ignore = [] if os.environ.get("RINGPS_UNDER_MPIEXEC") else ["mpi", "scenarios"]
