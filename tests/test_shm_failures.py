"""A peer frozen or killed in the middle of a shared-memory collective: the others get a
PeerTimeout naming it, or the launcher ends the job; never a hang past the deadline, never a
segfault, and nothing left in /dev/shm or running."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mpirun import ROOT, mpiexec_path

TIMEOUT = 3
RANKS = 3


def _shm_files() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _job(mode: str, algorithm: str, dies_at: int, wait: float):
    """Start the scenario; once every survivor has reported, or after `wait` seconds, end
    whatever is left of it. Returns (output, whether it ended by itself, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RINGPS_UNDER_MPIEXEC": "1",
           "RINGPS_TIMEOUT": str(TIMEOUT), "RINGPS_TRANSPORT": "shm", "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([mpiexec_path(), "-n", str(RANKS), sys.executable,
                             "tests/scenarios/shm_peer_dies.py", mode, algorithm, str(dies_at)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while time.monotonic() - start < wait and proc.poll() is None:
        if sum(line.startswith("rank ") for line in lines) >= RANKS - 1:
            break
        time.sleep(0.1)
    ended_by_itself = proc.poll() is not None
    if not ended_by_itself:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    return "".join(lines), ended_by_itself, time.monotonic() - start


def _nothing_left(before: set[str]) -> None:
    """ringps names nothing in /dev/shm (its segments are memfds, freed with the last
    process); MPICH's own files (mpich_shm_*), which a killed MPICH job leaves, are not ours."""
    ours = {name for name in _shm_files() - before if not name.startswith("mpich")}
    assert not ours, f"left in /dev/shm: {ours}"
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", "shm_peer_dies.py"], capture_output=True,
                              text=True).stdout.split()
    assert not leftover, f"processes left running: {leftover}"


@pytest.mark.parametrize("algorithm,dies_at,named_by", [("ring", 3, [0]), ("oneshot", 1, [0, 1]),
                                                       ("board", 0, [0, 1])])
def test_frozen_peer_is_named_by_a_timeout(algorithm, dies_at, named_by):
    """Ranks in `named_by` wait on the victim directly (the ring's next rank; every rank in
    oneshot) and must name it; in a ring the others wait on a live neighbour that is itself
    stuck, and name that one."""
    before = _shm_files()
    out, _, _ = _job("freeze", algorithm, dies_at, wait=3 * TIMEOUT + 20)
    for rank in range(RANKS - 1):
        line = next((x for x in out.splitlines() if x.startswith(f"rank {rank}:")), "")
        assert "PeerTimeout" in line and f"after {TIMEOUT} s" in line, out
        if rank in named_by:
            waited_for = f"with rank {RANKS - 1};" if algorithm == "board" else \
                f"from rank {RANKS - 1} "          # the board's wait: the metadata row's
            assert waited_for in line.split("waiting to", 1)[1], out
    assert "Segmentation fault" not in out and "finished without" not in out, out
    _nothing_left(before)


@pytest.mark.parametrize("algorithm,dies_at", [("ring", 3), ("blocked", 1), ("board", 0)])
def test_killed_peer_ends_the_job(algorithm, dies_at):
    before = _shm_files()
    out, ended, took = _job("kill", algorithm, dies_at, wait=TIMEOUT + 60)
    assert ended, f"the job hung after a rank was killed:\n{out}"
    assert "Segmentation fault" not in out and "finished without" not in out, out
    _nothing_left(before)
