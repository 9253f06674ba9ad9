"""init_process_group / destroy_process_group / init_process_group in one process, as torch's
own tests and notebooks do: each init must meet the others afresh, even while an old group
(and so its store) is still referenced."""
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import collectives.torch_backend  # noqa: E402,F401


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
