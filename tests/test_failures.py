"""Failures end the job with a message naming the rank; nothing hangs."""
import re

from mpirun import run


def test_failing_rank_kills_the_job_and_is_named():
    rc, out = run(3, ["-m", "pytest", "tests/mpi/test_harness.py", "-q", "-p", "no:cacheprovider"],
                  timeout=120, env={"RINGPS_DELIBERATE_FAILURE": "1"})
    assert rc not in (None, 0), out
    assert "RANK 1 of 3 FAILED" in out and "deliberate failure on rank 1" in out, out


def test_silent_peer_raises_timeout_naming_the_peer(tmp_path):
    rc, out = run(3, ["tests/scenarios/silent_peer.py", "nocheck", str(tmp_path)], timeout=150)
    assert rc is not None, out
    # rank 2 receives from rank 1 in the ring; rank 0 then starves waiting for rank 2.
    # 1000 float32 in 3 chunks of 334/333/333: rank 2's first receive is rank 1's chunk,
    # 334 floats = 1336 bytes
    assert ("rank 2: PeerTimeout: ringps: rank 2 timed out after 2 s in allreduce #1 (ring, "
            "1000 float32), waiting to receive 1336 bytes from rank 1; not heard from: rank 1 "
            in out), out
    # half the deadline: one stall warning per waiting rank, naming whom it waits for
    assert re.search(r"ringps: rank 2: allreduce #1 \(ring, 1000 float32\) has waited 1\.\d s "
                     r"to receive 1336 bytes from rank 1; not heard from: rank 1", out), out
    assert "rank 0: PeerTimeout" in out and "NO ERROR" not in out, out
    assert "rank 2: then: ringps: rank 2: this communicator is unusable after an earlier " \
        "failure (rank 2 timed out" in out, out


def test_silent_peer_fails_the_metadata_check_in_time(tmp_path):
    rc, out = run(3, ["tests/scenarios/silent_peer.py", "check", str(tmp_path)], timeout=150)
    assert rc is not None, out
    for rank in (0, 2):             # rank 1 never called: its row is the one missing
        assert (f"rank {rank}: PeerTimeout: ringps: rank {rank} timed out after 2 s in "
                f"allreduce #1 (ring, 1000 float32), waiting to exchange metadata with rank 1; "
                f"not heard from: rank 1 ") in out, out
        assert re.search(rf"rank {rank}: allreduce #1 \(ring, 1000 float32\) has waited 1\.\d s "
                         rf"to exchange metadata with rank 1; not heard from: rank 1", out), out


def test_dead_peer_ends_the_job():
    rc, out = run(3, ["tests/scenarios/dead_peer.py"], timeout=120)
    assert rc is not None, f"job hung after a rank died:\n{out}"
    assert rc != 0 and "finished although rank 1 is dead" not in out, out


def test_server_ranks_serve_inside_init_and_the_workers_release_them():
    for how, env in (("2", {}), ("env", {"RINGPS_SERVERS": "2"})):
        rc, out = run(5, ["tests/scenarios/ps_roles.py", how], timeout=150, env=env)
        assert rc == 0, out
        assert "SERVER RAN ON" not in out, out
        for worker in range(3):
            assert f"worker {worker} of 3 (world rank {worker}) ok" in out, out
