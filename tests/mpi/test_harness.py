"""The harness itself: a deliberately failing rank (only when tests/test_failures.py asks)."""
import os

import pytest


@pytest.mark.skipif(not os.environ.get("RINGPS_DELIBERATE_FAILURE"), reason="harness self-test")
def test_deliberate_failure_on_rank_1(comm):
    assert comm.rank != 1, "deliberate failure on rank 1"
    comm.barrier()            # the other ranks wait here until the abort takes them down
