"""A rank that hangs instead of dying must not hang the job: ringps ends it, every survivor
saying which collective, which call, and which rank it did not hear from (watchdog.py).
Each case is its own mpiexec job under a hard timeout, and must end within ringps's
deadline plus a margin, leaving no process and no /dev/shm file behind."""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from mpirun import run

RANKS = 4
TIMEOUT = 3                 # RINGPS_TIMEOUT for these jobs
MARGIN = 12                 # start-up of 4 ranks on a small machine, plus the abort itself
SCENARIO = "tests/scenarios/stuck_rank.py"


def _shm_files() -> set:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.fixture(autouse=True)
def no_new_shm_files(request):
    """Nothing in /dev/shm outlives a job ringps ended (MPI_Abort leaves MPICH's segment
    files unless they are unlinked first). A job the test itself had to kill leaves MPICH's
    files; that test removes them (`killed_by_the_test`)."""
    before = _shm_files()
    yield
    if "killed_by_the_test" in request.keywords:
        for name in _shm_files() - before:
            if name.startswith("mpich_shm_"):
                os.unlink(os.path.join("/dev/shm", name))
    deadline = time.monotonic() + 5
    while (new := _orphans(_shm_files() - before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not new, f"left in /dev/shm: {sorted(new)}"


def _orphans(names: set) -> set:
    """Those of `names` no live process maps: left behind, not another job's working files."""
    if not names:
        return names
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.rsplit("/dev/shm/", 1)[1].split()[0]
                          for line in maps.read_text().splitlines() if "/dev/shm/" in line)
        except (OSError, IndexError):
            continue
    return {n for n in names if n not in mapped and (Path("/dev/shm") / n).exists()}


def job(*args, env=None, timeout=90):
    started = time.monotonic()
    rc, out = run(RANKS, [SCENARIO, *args], timeout=timeout,
                  env={"RINGPS_TIMEOUT": str(TIMEOUT), **(env or {})})
    return rc, out, time.monotonic() - started


def no_leftovers(settle: float = 5.0) -> None:
    no_leftovers_of(SCENARIO, settle)


def no_leftovers_of(script: str, settle: float = 5.0) -> None:
    """No rank of the job outlives it (killed ranks may take a moment to be reaped)."""
    deadline = time.monotonic() + settle
    while True:
        alive = subprocess.run(["pgrep", "-af", script], capture_output=True,
                               text=True).stdout.strip()
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not alive, f"processes left behind: {alive}"
    shm = [f for f in os.listdir("/dev/shm") if "ringps" in f] if os.path.isdir("/dev/shm") else []
    assert not shm, f"/dev/shm files left behind: {shm}"


def survivors():
    return range(RANKS - 1)


def test_frozen_rank_ends_the_job_and_every_survivor_names_it():
    rc, out, took = job("freeze")
    assert rc is not None, f"job hung:\n{out}"
    assert rc != 0 and took < TIMEOUT + MARGIN, (took, out)
    for rank in survivors():
        # the last rank never arrives at the second call's metadata exchange
        assert (f"ringps: rank {rank}: PeerTimeout: rank {rank} timed out after {TIMEOUT} s in "
                f"allreduce #2 (ring, 100000 float32), waiting to exchange metadata with rank 3; "
                f"not heard from: rank 3 ") in out, out
        assert "; ending the job" in out, out
        assert re.search(rf"ringps: rank {rank}: allreduce #2 \(ring, 100000 float32\) has "
                         rf"waited 1\.\d s to exchange metadata with rank 3; not heard from: "
                         rf"rank 3", out), out
    no_leftovers()


def test_rank_frozen_inside_the_ring_ends_the_job():
    rc, out, took = job("freeze-mid", "nocheck")
    assert rc is not None and rc != 0 and took < TIMEOUT + MARGIN, (rc, took, out)
    lines = [line for line in out.splitlines() if "; ending the job" in line]
    assert lines, out
    # every survivor waits in the ring for its left neighbour; the chain starts at rank 3
    assert any("allreduce #2 (ring, 100000 float32)" in line and "not heard from: rank" in line
               for line in lines), out
    no_leftovers()


def test_raising_rank_ends_the_job_at_once():
    rc, out, took = job("raise", env={"RINGPS_TIMEOUT": "60"}, timeout=120)
    assert rc is not None and rc != 0, out
    assert took < 30, f"the survivors waited for their own deadline ({took:.0f} s):\n{out}"
    assert "ringps: rank 3: ValueError: rank 3 failed on purpose; ending the job" in out, out
    no_leftovers()


def test_straggler_past_the_deadline_is_named():
    rc, out, took = job(f"straggle:{TIMEOUT + 4}")
    assert rc is not None and rc != 0, out
    for rank in survivors():
        assert (f"rank {rank} timed out after {TIMEOUT} s in allreduce #2 (ring, 100000 "
                f"float32), waiting to exchange metadata with rank 3; not heard from: rank 3 "
                in out), out
    no_leftovers()


def test_straggler_within_the_deadline_is_warned_about_then_finishes():
    rc, out, _ = job("straggle:2.5", env={"RINGPS_TIMEOUT": "4"})
    assert rc == 0, out
    for rank in survivors():
        assert re.search(rf"ringps: rank {rank}: allreduce #2 \(ring, 100000 float32\) has "
                         rf"waited 2\.\d s to exchange metadata with rank 3; not heard from: "
                         rf"rank 3 \(timeout in [12]\.\d s\)", out), out
        assert f"rank {rank}: second allreduce ok" in out, out


def test_caught_timeout_still_ends_the_job_at_exit():
    """A script that catches PeerTimeout and returns would wait in MPI_Finalize for the
    frozen rank; the exit guard ends the job instead."""
    rc, out, took = job("freeze", "check", "catch")
    assert rc is not None and rc != 0 and took < TIMEOUT + MARGIN, (rc, took, out)
    for rank in survivors():
        assert f"rank {rank}: caught after" in out, out
    assert "exiting after a timeout" in out and "ending the job rather than waiting in " \
        "MPI_Finalize" in out, out
    no_leftovers()


@pytest.mark.killed_by_the_test
@pytest.mark.parametrize("mode", ["raise"])
def test_opt_out_raises_and_leaves_the_job_to_the_caller(mode):
    """RINGPS_ON_TIMEOUT=raise: survivors get PeerTimeout and nothing ends the job for them
    (today's behaviour, for callers that recover): the test's own timeout kills it."""
    rc, out, took = job("freeze", env={"RINGPS_ON_TIMEOUT": mode}, timeout=TIMEOUT + 25)
    assert rc is None, f"ringps ended the job although RINGPS_ON_TIMEOUT={mode}:\n{out}"
    for rank in survivors():
        assert f"rank {rank} timed out after {TIMEOUT} s in allreduce #2" in out, out
    assert "; ending the job" not in out, out
    no_leftovers()


def test_bad_on_timeout_setting_is_refused_on_every_rank():
    rc, out, _ = job("freeze", env={"RINGPS_ON_TIMEOUT": "explode"})
    assert rc not in (None, 0), out
    assert "RINGPS_ON_TIMEOUT='explode' is not one of abort, raise" in out, out


TORCH_SCENARIO = "tests/scenarios/torch_stuck.py"


def torch_job(mode: str, launcher: str):
    """DDP on 2 ranks whose last rank fails at step 2, under mpiexec or torchrun."""
    started = time.monotonic()
    env = {"RINGPS_TIMEOUT": str(TIMEOUT)}
    if launcher == "mpiexec":
        rc, out = run(2, [TORCH_SCENARIO, mode], timeout=120, env=env)
    else:
        from test_torchrun import torchrun
        os.environ.update(env)
        try:
            rc, out = torchrun([TORCH_SCENARIO, mode], timeout=120)
        finally:
            os.environ.pop("RINGPS_TIMEOUT")
    return rc, out, time.monotonic() - started


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_exception_inside_ddp_backward_ends_the_job_at_once(launcher):
    """Not torch's 30 minutes, not even ringps's deadline: the raising rank ends the job
    (under torchrun its reason reaches the others through the store)."""
    rc, out, took = torch_job("raise", launcher)
    assert rc not in (None, 0), out
    assert took < 60, (took, out)
    assert "ringps: rank 1: RuntimeError: rank 1 failed inside backward on purpose; ending " \
        "the job" in out, out
    assert "FINISHED" not in out, out
    if launcher == "torchrun":
        assert "rank 0 (group '0', torch allreduce #" in out and \
            "stopped: rank 1 ended the job: RuntimeError: rank 1 failed inside backward" in out, out


def test_frozen_rank_under_ddp_ends_the_job_after_ringps_timeout():
    rc, out, took = torch_job("freeze", "mpiexec")
    assert rc not in (None, 0), out
    assert took < 60, (took, out)
    # rank 0's bucket allreduce (the group's thread) waits for rank 1's metadata
    assert re.search(rf"ringps: rank 0 \(group '0', torch allreduce #\d+, on the group's "
                     rf"thread\): PeerTimeout: rank 0 timed out after {TIMEOUT} s in allreduce "
                     rf"#\d+ \(\w+, \d+ float32\), waiting to exchange metadata with rank 1; "
                     rf"not heard from: rank 1", out), out
    no_leftovers_of(TORCH_SCENARIO)


PS_SCENARIO = "tests/scenarios/ps_stuck.py"


def ps_job(*args):
    started = time.monotonic()
    rc, out = run(5, [PS_SCENARIO, *args], timeout=90, env={"RINGPS_TIMEOUT": str(TIMEOUT)})
    return rc, out, time.monotonic() - started


@pytest.mark.parametrize("consistency", ["bsp", "asp"])
def test_frozen_ps_worker_is_named_by_the_servers_and_the_job_ends(consistency):
    """BSP: the servers hold the others' pulls for worker 2's push; ASP: the others finish
    and the servers wait for worker 2's goodbye. Either way they name it and end the job."""
    rc, out, took = ps_job("freeze-worker", consistency)
    assert rc not in (None, 0) and took < TIMEOUT + MARGIN, (rc, took, out)
    for server, rank in ((0, 3), (1, 4)):
        assert re.search(rf"ringps: server {server} \(rank {rank}\): .* waited \d+\.\d s; not "
                         rf"heard from since: worker 2 \(rank 2\) \(dead, hung, or stopped "
                         rf"calling the PS\); ending the job", out), out
    if consistency == "bsp":        # the held pulls are answered with the reason
        assert re.search(r"ringps: rank [01]: PSError: worker [01]: pull of key 'w' failed: "
                         r".*not heard from since: worker 2 \(rank 2\)", out), out
    else:
        assert "worker 0: FINISHED" in out and "worker 1: FINISHED" in out, out
    no_leftovers_of(PS_SCENARIO)


def test_frozen_ps_server_is_named_exactly_by_the_workers():
    rc, out, took = ps_job("freeze-server", "bsp")
    assert rc not in (None, 0) and took < TIMEOUT + MARGIN, (rc, took, out)
    # two servers; only server 1 (world rank 4) went quiet: it alone is named, by every
    # worker that reached its deadline before the first one ended the job
    lines = [line for line in out.splitlines() if "PSTimeout: worker" in line]
    assert lines, out
    for line in lines:
        assert re.search(rf"ringps: rank (\d): PSTimeout: worker \1 timed out after {TIMEOUT} s "
                         rf"on (pull|push) of key 'w'; not heard from: server 1 \(rank 4\) \(",
                         line), out
    assert "server 0 (rank 3)" not in out, out
    no_leftovers_of(PS_SCENARIO)


def test_frozen_rank_under_torchrun_is_ended_with_the_job():
    """No MPI_Abort under torchrun: the rank that gives up leaves its reason in the store and
    SIGKILLs the stopped peer on its host, rather than leaving it to torchrun's 30 s
    SIGTERM grace (a stopped process ignores SIGTERM)."""
    from test_torchrun import TORCHRUN
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "RINGPS_TIMEOUT": str(TIMEOUT)}
    for name in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        env.pop(name, None)
    proc = subprocess.Popen(TORCHRUN + [TORCH_SCENARIO, "freeze"], env=env, text=True,
                            cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ending = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if ending is None and "; ending the job" in line:
            ending = time.monotonic()
    proc.wait(timeout=120)
    out = "".join(lines)
    assert proc.returncode != 0 and ending is not None, out
    took = time.monotonic() - ending
    print(f"torchrun job ended {took:.1f} s after the teardown line")
    assert took < 15, f"the job lasted {took:.1f} s after rank 0 ended it:\n{out}"
    assert "not heard from: rank 1" in out, out
    no_leftovers_of(TORCH_SCENARIO)
