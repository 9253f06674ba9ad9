"""Fuzz every collective on 1 to 5 ranks (tests/fuzz/collectives_fuzz.py: hypothesis draws
collective, algorithm, dtype, op, root, length, segment, buffer kind and transport), one
mpiexec job per rank count, and show that the fuzzer does catch a planted bug and a silent
rank.

The seed of each job is printed (and repeated in a failure), so
`RINGPS_FUZZ_SEED=<seed> pytest tests/test_fuzz.py -k <ranks>` replays it;
RINGPS_FUZZ_EXAMPLES (default 200) and RINGPS_FUZZ_MAX_COUNT (default 5000) run more or
longer cases. The jobs run with RINGPS_SHM_MIN_BYTES=0, so even one-byte messages of the
shared-memory cases take shared memory, and RINGPS_TIMEOUT=30, so a hang becomes a
PeerTimeout that names the peer long before the job's own hard timeout."""
import os
import random
import re

import pytest

from mpirun import run

SCRIPT = "tests/fuzz/collectives_fuzz.py"
EXAMPLES = int(os.environ.get("RINGPS_FUZZ_EXAMPLES", 200))
JOB_TIMEOUT = 240 + EXAMPLES       # seconds: start-up on a loaded machine, then ~0.1 s a case
ENV = {"RINGPS_SHM_MIN_BYTES": "0", "RINGPS_TIMEOUT": "30"}


def job_seed() -> int:
    return int(os.environ.get("RINGPS_FUZZ_SEED") or random.randrange(2 ** 32))


def fuzz(ranks: int, *extra: str, timeout: float = JOB_TIMEOUT, env: dict | None = None):
    seed = job_seed()
    args = [SCRIPT, "--seed", str(seed), "--examples", str(EXAMPLES), *extra]
    print(f"fuzz job: mpiexec -n {ranks} python {' '.join(args)}")
    rc, out = run(ranks, args, timeout=timeout, env={**ENV, **(env or {})})
    print(out)
    return rc, out, f"mpiexec -n {ranks} python {' '.join(args)} (seed {seed}) "


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5])
def test_fuzz_collectives(ranks):
    rc, out, command = fuzz(ranks)
    assert rc is not None, f"{command}hung: killed after {JOB_TIMEOUT} s\n{out[-6000:]}"
    assert rc == 0, f"{command}failed (rc={rc}):\n{out[-6000:]}"
    ran = re.search(r"fuzz: (\d+) collectives on (\d+) ranks", out)
    assert ran and int(ran.group(2)) == ranks, f"{command}printed no summary:\n{out[-3000:]}"
    assert int(ran.group(1)) >= EXAMPLES, f"{command}ran fewer cases than asked:\n{out[-3000:]}"
    for collective in ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce"):
        assert re.search(rf"\b{collective} [1-9]", out), f"{command}never ran {collective}"


def test_fuzz_catches_and_shrinks_a_planted_wrong_result():
    """tests/fuzz/planted.py: the last rank keeps its own last element when the length is
    odd and above the rank count; the fuzzer must fail, name that rank and shrink the
    length to the smallest such one."""
    rc, out, command = fuzz(3, "--plant", "wrong", "--no-torch")
    assert rc not in (None, 0), f"{command}did not catch the planted bug:\n{out[-6000:]}"
    assert "rank 2: allreduce planted" in out and "elements wrong" in out, out[-6000:]
    assert "rank 0: allreduce planted" not in out, out[-6000:]     # only the last rank is wrong
    assert re.search(r"count=5\b", out), f"{command}did not shrink to count=5:\n{out[-6000:]}"


def test_fuzz_turns_a_silent_rank_into_a_timeout_naming_it():
    """Rank 1 never joins the planted allreduce: its neighbour in the ring must end in
    PeerTimeout naming rank 1 within RINGPS_TIMEOUT, and the job must end."""
    rc, out, command = fuzz(3, "--plant", "silent", "--no-torch", timeout=120,
                            env={"RINGPS_TIMEOUT": "2"})
    assert rc is not None, f"{command}hung:\n{out[-6000:]}"
    assert rc != 0, f"{command}did not notice the silent rank:\n{out[-6000:]}"
    assert re.search(r"rank 2: PeerTimeout: ringps: rank 2 timed out after 2 s in allreduce "
                     r"#\d+ \(planted, .*\), waiting to receive .* from rank 1.*; not heard "
                     r"from: rank 1 ", out), out[-6000:]


# Bugs the fuzzer found, fixed: waiting on shared memory now drives MPI's progress
# (shm.py), and a transport that gives up keeps every posted request's buffer (mpi.py).

def test_ring_over_shared_memory_and_mpi_at_once_does_not_hang():
    rc, out = run(4, ["tests/fuzz/repro_mixed_hang.py"], timeout=120, env={"RINGPS_TIMEOUT": "3"})
    assert rc is not None, f"repro_mixed_hang.py hung past its own timeout:\n{out[-3000:]}"
    assert rc == 0 and all(f"rank {r}: ok" in out for r in range(4)), out[-3000:]


def test_a_late_peer_cannot_overwrite_memory_after_a_timeout():
    rc, out = run(3, ["tests/fuzz/repro_after_timeout.py"], timeout=120,
                  env={"RINGPS_TIMEOUT": "2"})
    assert rc == 0, f"repro_after_timeout.py failed (rc={rc}):\n{out[-3000:]}"
    assert "PeerTimeout" in out, f"the scenario did not time out:\n{out[-3000:]}"
    assert all(f"rank {r}: memory intact" in out for r in range(3)), out[-3000:]
