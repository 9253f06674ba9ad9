"""init_process_group / destroy_process_group / init_process_group in one process, as torch's
own tests and notebooks do: each init must meet the others afresh, even while an old group
(and so its store) is still referenced."""
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import collectives.torch_backend  # noqa: E402,F401
from mpi4py import MPI  # noqa: E402


def test_each_init_meets_afresh_while_old_groups_live(comm):
    kept = []                       # old groups keep their stores alive
    for round_ in range(4):
        dist.init_process_group("ringps")
        kept.append(dist.group.WORLD)
        n, r = dist.get_world_size(), dist.get_rank()
        assert (n, r) == (comm.size, comm.rank)
        t = torch.arange(7, dtype=torch.float64) + 100 * r + round_
        dist.all_reduce(t)
        expected = n * torch.arange(7, dtype=torch.float64) + 100 * n * (n - 1) / 2 + n * round_
        assert torch.equal(t, expected), f"round {round_}: {t} != {expected}"
        if round_ % 2:
            kept.append(dist.new_group(backend="gloo"))
        dist.destroy_process_group()
        # destroy gave the group's MPI communicator back (MPICH has 2048 a process)
        assert kept[-1 - round_ % 2].comm.mpi == MPI.COMM_NULL
        with pytest.raises(RuntimeError, match="this communicator was closed"):
            kept[-1 - round_ % 2].comm.barrier()


def _deadline(group=None) -> float:
    """The deadline of the ringps group's waits (the group object is ringps's own)."""
    return (group or dist.group.WORLD).comm.transport.timeout


def test_one_deadline_ringps_timeout_unless_the_group_names_its_own(comm, monkeypatch):
    """A group without timeout= waits as long as the job's other ringps waits (the world
    Communicator's deadline, RINGPS_TIMEOUT), not torch's 30 minutes; timeout= overrides
    it for that group alone."""
    from datetime import timedelta
    dist.init_process_group("ringps")
    try:
        assert _deadline() == comm.timeout
        assert _deadline(dist.new_group(backend="ringps")) == comm.timeout
        assert _deadline(dist.new_group(backend="ringps", timeout=timedelta(seconds=41))) == 41
    finally:
        dist.destroy_process_group()
    dist.init_process_group("ringps", timeout=timedelta(seconds=17))
    try:
        assert _deadline() == 17
    finally:
        dist.destroy_process_group()
