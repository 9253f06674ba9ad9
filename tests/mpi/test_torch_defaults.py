"""The ringps ProcessGroup called the way torch's own CPU groups (gloo) accept: without the
options argument, in the short overloads (one tensor, a ReduceOp, a root), and the coalesced
calls (`dist.all_gather_coalesced`, `allreduce_coalesced`). Every call runs on a ringps group
and on a gloo group with the same rank-distinct inputs; both must match the float64
reference."""
import pytest
from torch_groups import dist, groups, torch  # noqa: F401  (groups: the fixture)


def draw(seed, rank, *shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    return torch.randint(-50, 50, shape, generator=g).to(dtype)


def each_rank(seed, *shape, dtype=torch.float64):
    return [draw(seed, j, *shape, dtype=dtype) for j in range(dist.get_world_size())]


BACKENDS = ["ringps", "gloo"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_allreduce_without_options_and_in_its_short_forms(groups, backend, seed):
    pg, r = groups[backend], dist.get_rank()
    values = each_rank(seed, 5, 3)
    total = torch.stack(values).sum(0)
    t = values[r].clone()
    pg.allreduce([t]).wait()                                   # no options
    assert torch.equal(t, total)
    t = values[r].clone()
    pg.allreduce(t).wait()                                     # one tensor
    assert torch.equal(t, total)
    t = values[r].clone()
    pg.allreduce([t], dist.ReduceOp.MAX).wait()                # a ReduceOp
    assert torch.equal(t, torch.stack(values).max(0).values)
    t = values[r].clone()
    pg.allreduce(t, op=dist.ReduceOp.MIN).wait()
    assert torch.equal(t, torch.stack(values).min(0).values)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_broadcast_barrier_without_options(groups, backend, seed):
    pg, n, r = groups[backend], dist.get_world_size(), dist.get_rank()
    root = n - 1
    values = each_rank(seed, 4)
    t = values[r].clone()
    pg.reduce(t, root).wait()
    if r == root:
        assert torch.equal(t, torch.stack(values).sum(0))
    t = values[r].clone()
    pg.reduce([t]).wait()                                      # root 0, sum
    if r == 0:
        assert torch.equal(t, torch.stack(values).sum(0))
    t = values[r].clone()
    pg.broadcast([t]).wait()
    assert torch.equal(t, values[0])
    t = values[r].clone()
    pg.broadcast(t, root).wait()
    assert torch.equal(t, values[root])
    pg.barrier().wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gathers_and_scatters_without_options(groups, backend, seed):
    pg, n, r = groups[backend], dist.get_world_size(), dist.get_rank()
    values = each_rank(seed, 3, 2)
    outs = [torch.empty(3, 2, dtype=torch.float64) for _ in range(n)]
    pg.allgather([outs], [values[r]]).wait()
    assert all(torch.equal(o, v) for o, v in zip(outs, values))
    outs = [torch.empty(3, 2, dtype=torch.float64) for _ in range(n)]
    pg.allgather(outs, values[r]).wait()                       # short form
    assert all(torch.equal(o, v) for o, v in zip(outs, values))
    big = torch.empty(n * 3, 2, dtype=torch.float64)
    pg._allgather_base(big, values[r]).wait()
    assert torch.equal(big, torch.cat(values))
    outs = [torch.empty(3, 2, dtype=torch.float64) for _ in range(n)]
    pg.gather([outs] if r == 0 else [], [values[r]]).wait()
    if r == 0:
        assert all(torch.equal(o, v) for o, v in zip(outs, values))
    pieces = [torch.full((2,), 10.0 * j + 1, dtype=torch.float64) for j in range(n)]
    out = torch.empty(2, dtype=torch.float64)
    pg.scatter([out], [pieces] if r == 0 else []).wait()
    assert torch.equal(out, pieces[r])
    inputs = each_rank(seed + 1, n, 4)
    out = torch.empty(4, dtype=torch.float64)
    pg.reduce_scatter([out], [list(inputs[r])]).wait()
    assert torch.equal(out, torch.stack(inputs).sum(0)[r])
    out = torch.empty(4, dtype=torch.float64)
    pg._reduce_scatter_base(out, inputs[r].reshape(-1)).wait()
    assert torch.equal(out, torch.stack(inputs).sum(0)[r])
    swapped = torch.empty(n, 4, dtype=torch.float64)
    pg.alltoall_base(swapped, inputs[r], [], []).wait()
    assert torch.equal(swapped, torch.stack([inputs[j][r] for j in range(n)]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_gather_coalesced_gathers_every_input_of_every_rank(groups, backend, seed):
    """dist.all_gather_coalesced (which torch calls without options on the group):
    inputs of different sizes, one empty, and two dtypes."""
    n, r = dist.get_world_size(), dist.get_rank()
    shapes = [(3,), (0,), (2, 5), (1,)]
    for dtype in (torch.float32, torch.int64):
        values = [[draw(seed + k, j, *s, dtype=dtype) for k, s in enumerate(shapes)]
                  for j in range(n)]
        outputs = [[torch.empty(s, dtype=dtype) for s in shapes] for _ in range(n)]
        dist.all_gather_coalesced(outputs, values[r], group=groups[backend])
        for k in range(len(shapes)):
            for j in range(n):
                assert torch.equal(outputs[j][k], values[j][k]), (dtype, k, j)
    work = dist.all_gather_coalesced(outputs, values[r], group=groups[backend], async_op=True)
    work.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_allreduce_coalesced_with_mixed_dtypes_and_empty_tensors(groups, backend, seed):
    r = dist.get_rank()
    shapes = [(7,), (0,), (3, 3), (1,), (11,)]
    dtypes = [torch.float32, torch.float64, torch.float32, torch.int64, torch.float64]
    if backend == "gloo":       # gloo's allreduce_coalesced takes one dtype per call
        dtypes = [torch.float64] * len(shapes)
    values = [[draw(seed + k, j, *s, dtype=d) for k, (s, d) in enumerate(zip(shapes, dtypes))]
              for j in range(dist.get_world_size())]
    mine = [v.clone() for v in values[r]]
    groups[backend].allreduce_coalesced(mine).wait()           # no options
    for k, t in enumerate(mine):
        assert t.dtype == dtypes[k] and torch.equal(t, sum(v[k] for v in values)), k
    same = [k for k, d in enumerate(dtypes) if d == torch.float64]   # torch's wrapper: one dtype
    mine = [values[r][k].clone() for k in same]
    dist.all_reduce_coalesced(mine, group=groups[backend])
    assert all(torch.equal(t, sum(v[k] for v in values)) for k, t in zip(same, mine))


def test_monitored_barrier_on_the_group_object(groups):
    groups["ringps"].monitored_barrier()
    groups["gloo"].monitored_barrier()


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_forms_with_a_root_or_an_op(groups, backend, seed):
    pg, n, r = groups[backend], dist.get_world_size(), dist.get_rank()
    root = n - 1
    values = each_rank(seed, 4)
    outs = [torch.empty(4, dtype=torch.float64) for _ in range(n)] if r == root else []
    pg.gather(outs, values[r], root).wait()
    if r == root:
        assert all(torch.equal(o, v) for o, v in zip(outs, values))
    out = torch.empty(4, dtype=torch.float64)
    pg.scatter(out, values if r == root else [], root).wait()       # root's j-th to rank j
    assert torch.equal(out, values[r])


def test_the_rest_without_options(groups, seed):
    """Methods gloo has no CPU version of, on the ringps group alone."""
    pg, n, r = groups["ringps"], dist.get_world_size(), dist.get_rank()
    inputs = each_rank(seed, n, 3)
    outs = [torch.empty(3, dtype=torch.float64) for _ in range(n)]
    pg.alltoall(outs, list(inputs[r])).wait()
    assert all(torch.equal(outs[j], inputs[j][r]) for j in range(n))
    out = torch.empty(3, dtype=torch.float64)
    pg.reduce_scatter(out, list(inputs[r]), dist.ReduceOp.MAX).wait()
    assert torch.equal(out, torch.stack(inputs).max(0).values[r])
    bigs = [torch.empty(n * 3, dtype=torch.float64), torch.empty(n, dtype=torch.float64)]
    mine = [inputs[r][0], inputs[r][0][1:2]]
    pg.allgather_into_tensor_coalesced(bigs, mine).wait()
    assert torch.equal(bigs[0], torch.cat([v[0] for v in inputs]))
    assert torch.equal(bigs[1], torch.cat([v[0][1:2] for v in inputs]))
    small = [torch.empty(3, dtype=torch.float64)]
    pg.reduce_scatter_tensor_coalesced(small, [inputs[r].reshape(-1)]).wait()
    assert torch.equal(small[0], torch.stack(inputs).sum(0)[r])
