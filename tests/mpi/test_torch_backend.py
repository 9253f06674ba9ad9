"""The "ringps" torch.distributed backend under real ranks: every collective against a
float64 reference, async work, subgroups, input checks, and DDP parity with gloo (the
intent of torch's test_c10d_pypg.py and the *_checks cases of test_c10d_gloo.py)."""
import importlib.util
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import collectives.torch_backend  # noqa: E402,F401
from reference import assert_close, expected, inputs, make_buffer, tolerance  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
R = dist.ReduceOp
OPS = {"sum": R.SUM, "avg": R.AVG, "max": R.MAX, "min": R.MIN, "prod": R.PRODUCT}


@pytest.fixture(scope="module")
def world(comm):
    dist.init_process_group("ringps")
    yield dist.group.WORLD
    dist.destroy_process_group()


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16", "int32"])
@pytest.mark.parametrize("op", list(OPS))
def test_all_reduce(world, op, dtype, seed):
    if op == "avg" and dtype == "int32":
        pytest.skip("avg is float-only")
    n, r = dist.get_world_size(), dist.get_rank()
    values = inputs(dtype, op, 2 * n + 3, seed, n)
    t = make_buffer(values[r], dtype, "torch")
    dist.all_reduce(t, op=OPS[op])
    assert_close(t, expected(values, op), tolerance(values, op, dtype), f"all_reduce {op} {dtype}")


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("cupy") is None or not torch.cuda.is_available(),
                    reason="needs CuPy and a CUDA device")
def test_all_reduce_of_cuda_tensors_on_a_side_stream(world):
    """The GPU path through the backend: the group's thread waits for the caller's stream."""
    n, r = dist.get_world_size(), dist.get_rank()
    torch.cuda.set_device(r % torch.cuda.device_count())
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        t = torch.full((1 << 20,), float(r + 1), device="cuda")
        dist.all_reduce(t)
    side.synchronize()
    assert torch.all(t == n * (n + 1) / 2)


def test_premul_sum_and_async_work(world):
    n, r = dist.get_world_size(), dist.get_rank()
    t = torch.full((7,), float(r + 1))
    work = dist.all_reduce(t, op=dist._make_nccl_premul_sum(2.0), async_op=True)
    work.wait()
    assert work.is_completed() and torch.equal(t, torch.full((7,), float(n * (n + 1))))
    u = torch.ones(3)
    assert torch.equal(dist.all_reduce(u, async_op=True).get_future().wait()[0], u)


def test_coalesced_allreduce_keeps_each_tensor(world):
    n, r = dist.get_world_size(), dist.get_rank()
    tensors = [torch.full((3, 2), float(r)), torch.full((5,), r, dtype=torch.int64),
               torch.full((4,), float(r + 1), dtype=torch.float64)]
    dist.all_reduce_coalesced(tensors[:1] + [torch.full((2,), float(r))])   # torch's spelling
    pg = dist.distributed_c10d._get_default_group()           # and mixed dtypes, as buckets
    opts = dist.AllreduceCoalescedOptions()
    opts.reduceOp = R.SUM
    pg.allreduce_coalesced(tensors, opts).wait()
    tensors[0] /= n
    total = n * (n - 1) / 2
    assert torch.equal(tensors[0], torch.full((3, 2), total))
    assert torch.equal(tensors[1], torch.full((5,), int(total), dtype=torch.int64))
    assert torch.equal(tensors[2], torch.full((4,), n * (n + 1) / 2, dtype=torch.float64))


def test_gathers_and_scatters(world):
    n, r = dist.get_world_size(), dist.get_rank()
    mine = torch.arange(3.0) + 10 * r
    everyone = torch.cat([torch.arange(3.0) + 10 * p for p in range(n)])
    outs = [torch.empty(3) for _ in range(n)]
    dist.all_gather(outs, mine)
    assert torch.equal(torch.cat(outs), everyone)
    out = torch.empty(3 * n)
    dist.all_gather_into_tensor(out, mine)
    assert torch.equal(out, everyone)
    aliased = torch.zeros(3 * n)                          # FSDP2: input is a slice of output
    aliased[3 * r:3 * r + 3] = mine
    dist.all_gather_into_tensor(aliased, aliased[3 * r:3 * r + 3])
    assert torch.equal(aliased, everyone)
    big = torch.arange(2.0 * n) + r
    before = big.clone()
    small = torch.empty(2)
    dist.reduce_scatter_tensor(small, big)
    assert torch.equal(big, before)                       # input left as it was
    assert torch.equal(small, (torch.arange(2.0 * n) * n + n * (n - 1) / 2)[2 * r:2 * r + 2])
    small = torch.empty(2)
    dist.reduce_scatter(small, [torch.full((2,), float(p + r)) for p in range(n)])
    assert torch.equal(small, torch.full((2,), float(n * r + n * (n - 1) / 2)))
    for root in range(n):
        t = torch.full((4,), float(r))
        dist.broadcast(t, src=root)
        assert torch.equal(t, torch.full((4,), float(root)))
        t = torch.full((4,), float(r + 1))
        dist.reduce(t, dst=root)
        if r == root:
            assert torch.equal(t, torch.full((4,), n * (n + 1) / 2))
        gathered = [torch.empty(2) for _ in range(n)] if r == root else None
        dist.gather(torch.full((2,), float(r)), gathered, dst=root)
        if r == root:
            assert [g[0].item() for g in gathered] == list(range(n))
        got = torch.empty(2)
        dist.scatter(got, [torch.full((2,), float(p)) for p in range(n)] if r == root else None,
                     src=root)
        assert torch.equal(got, torch.full((2,), float(r)))


def test_all_to_all_uneven_splits(world):
    n, r = dist.get_world_size(), dist.get_rank()
    send_sizes = [p + r + 1 for p in range(n)]            # rank r sends p+r+1 rows to p
    recv_sizes = [r + p + 1 for p in range(n)]
    data = torch.cat([torch.full((s, 2), float(100 * r + p)) for p, s in enumerate(send_sizes)])
    out = torch.empty(sum(recv_sizes), 2)
    dist.all_to_all_single(out, data, recv_sizes, send_sizes)
    want = torch.cat([torch.full((s, 2), float(100 * p + r)) for p, s in enumerate(recv_sizes)])
    assert torch.equal(out, want)
    outs = [torch.empty(2) for _ in range(n)]
    dist.all_to_all(outs, [torch.full((2,), float(10 * r + p)) for p in range(n)])
    assert [o[0].item() for o in outs] == [10 * p + r for p in range(n)]


def test_send_recv_around_the_ring(world):
    n, r = dist.get_world_size(), dist.get_rank()
    if n < 2:
        pytest.skip("needs 2 ranks")
    got = torch.empty(5)
    recv = dist.irecv(got, src=(r - 1) % n, tag=3)
    send = dist.isend(torch.full((5,), float(r)), dst=(r + 1) % n, tag=3)
    send.wait()
    recv.wait()
    assert torch.equal(got, torch.full((5,), float((r - 1) % n)))


def test_subgroup_with_its_own_algorithm(world):
    n, r = dist.get_world_size(), dist.get_rank()
    if n < 2:
        pytest.skip("needs 2 ranks")
    sub = dist.new_group([0, 1], backend="ringps", pg_options={"algorithm": "blocked"})
    if r < 2:
        t = torch.full((3,), float(r + 1))
        dist.all_reduce(t, group=sub)
        assert torch.equal(t, torch.full((3,), 3.0))
        assert "algorithm=blocked" in repr(sub)
    with pytest.raises(ValueError, match="unknown algorithm 'tree'"):
        dist.new_group(list(range(n)), backend="ringps", pg_options={"algorithm": "tree"})


def test_a_group_of_every_rank_keeps_the_ring_layout(world, monkeypatch):
    """C.init(rings=...) or RINGPS_RINGS reaches the ring the torch groups run."""
    from collectives import api
    from collectives.comm import Communicator
    n, r = dist.get_world_size(), dist.get_rank()
    if n < 3:
        pytest.skip("two rings need 3+ ranks")
    monkeypatch.setattr(api, "_default", Communicator(rings="bidirectional"))
    group = dist.new_group(list(range(n)), backend="ringps")
    backwards = "-".join(map(str, reversed(range(n))))
    assert f"rings={'-'.join(map(str, range(n)))}:1,{backwards}:1" in repr(group)
    t = torch.arange(1001, dtype=torch.float64) * (r + 1)
    dist.all_reduce(t, group=group)
    assert torch.equal(t, torch.arange(1001, dtype=torch.float64) * (n * (n + 1) // 2))


def test_input_checks(world):
    n = dist.get_world_size()
    with pytest.raises(ValueError, match="must hold"):
        dist.all_gather_into_tensor(torch.empty(n * 3 + 1), torch.empty(3))
    with pytest.raises(ValueError, match="ReduceOp BAND is not supported"):
        dist.all_reduce(torch.ones(2, dtype=torch.int32), op=R.BAND)
    with pytest.raises(ValueError, match="every tensor in the list must match"):
        dist.reduce_scatter(torch.empty(2), [torch.empty(2 + (p == 0)) for p in range(n)])
    with pytest.raises(ValueError, match="non-contiguous tensor"):
        dist.all_reduce(torch.ones(4, 4).t())
    t = torch.ones(2)
    dist.all_reduce(t)                                   # the group still works afterwards
    assert torch.equal(t, torch.full((2,), float(n)))


def _example():
    from bench.compression import load_example
    return load_example()


@pytest.mark.parametrize("algorithm,hook", [("root", None), ("host", None), ("blocked", None),
                                            ("ring", None), ("auto", None), ("ring", "fp16"),
                                            ("blocked", "fp16")])
def test_ddp_trains_the_same_model_as_gloo(world, algorithm, hook):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    hooks = {"fp16": default_hooks.fp16_compress_hook}      # torch's bf16 hook needs CUDA
    example = _example()
    x, y = example.dataset(samples=1024)
    ours = dist.new_group(backend="ringps", pg_options={"algorithm": algorithm})
    gloo = dist.new_group(backend="gloo")
    results = []
    for group in (ours, gloo):
        ddp = torch.nn.parallel.DistributedDataParallel(example.model(), process_group=group)
        if hook:                                   # gradients travel as fp16
            ddp.register_comm_hook(group, hooks[hook])
        accuracy = example.train(ddp, x, y, epochs=2, batch=64, lr=0.02, log=lambda *_: None)
        results.append((accuracy, {k: v.clone() for k, v in ddp.module.state_dict().items()}))
    (acc_ours, ours_params), (acc_gloo, gloo_params) = results
    for name in gloo_params:
        assert torch.allclose(ours_params[name], gloo_params[name], rtol=1e-4, atol=1e-5), name
    assert abs(acc_ours - acc_gloo) < 1e-3


def test_fsdp2_trains_like_one_process(world):
    """fully_shard over a ringps device mesh (all_gather_into_tensor with aliased inputs,
    reduce_scatter_tensor) matches plain SGD on the averaged gradient of every rank's batch."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    n, r = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (n,))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 33), torch.nn.ReLU(), torch.nn.Linear(33, 4))
    reference = torch.nn.Sequential(torch.nn.Linear(16, 33), torch.nn.ReLU(),
                                    torch.nn.Linear(33, 4))
    reference.load_state_dict(model.state_dict())
    for layer in (model[0], model[2], model):
        fully_shard(layer, mesh=mesh)
    batches = [torch.randn(8, 16, generator=torch.Generator().manual_seed(100 + p))
               for p in range(n)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(batches[r]).square().mean().backward()
        optimizer.step()
        reference_optimizer.zero_grad()
        for batch in batches:
            (reference(batch).square().mean() / n).backward()
        reference_optimizer.step()
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(ours.full_tensor(), theirs, rtol=1e-4, atol=1e-6), name


def test_async_op_returns_at_once_and_progresses_in_the_background(world):
    """Rank 0 issues its allreduce while the others are still busy: it gets its Work back at
    once, can compute meanwhile, and the result arrives once everyone has called."""
    import time
    n, r = dist.get_world_size(), dist.get_rank()
    if n < 2:
        pytest.skip("needs 2 ranks")
    dist.barrier()
    t = torch.full((1000,), float(r + 1))
    if r != 0:
        time.sleep(0.5)
    start = time.perf_counter()
    work = dist.all_reduce(t, async_op=True)
    issued = time.perf_counter() - start
    if r == 0:
        assert issued < 0.25 and not work.is_completed()
    work.wait()
    assert work.is_completed() and torch.equal(t, torch.full((1000,), n * (n + 1) / 2))


def test_debug_mode_names_mismatched_calls(world, monkeypatch):
    n, r = dist.get_world_size(), dist.get_rank()
    if n < 2:
        pytest.skip("needs 2 ranks")
    monkeypatch.setenv("RINGPS_DEBUG", "detail")
    checked = dist.new_group(backend="ringps")
    assert type(checked).__name__ == "DebugProcessGroup"
    with pytest.raises(ValueError, match=r"ranks disagree on the shape\[0\] of call #1 "
                                         r"\(allreduce on rank \d\): rank 0: 3, rank 1: 2"):
        dist.all_reduce(torch.ones((2, 3) if r == 1 else (3, 2)), group=checked)
    with pytest.raises(ValueError, match="disagree on the collective of call #2 .*rank 1: "
                                         "broadcast"):
        if r == 1:
            dist.broadcast(torch.ones(3), src=0, group=checked)
        else:
            dist.all_reduce(torch.ones(3), group=checked)
    t = torch.ones(4)
    dist.all_reduce(t, group=checked)
    assert torch.equal(t, torch.full((4,), float(n)))


def test_recv_from_any_source_names_the_sender(world):
    n, r = dist.get_world_size(), dist.get_rank()
    if n < 2:
        pytest.skip("needs 2 ranks")
    if r == 0:
        senders = set()
        for _ in range(n - 1):
            got = torch.empty(2)
            sender = dist.recv(got, tag=9)
            assert torch.equal(got, torch.full((2,), float(sender)))
            senders.add(sender)
        assert senders == set(range(1, n))
    else:
        dist.send(torch.full((2,), float(r)), dst=0, tag=9)


def test_older_spellings_on_the_group_object(world):
    from torch._C import _distributed_c10d as c10d
    n, r = dist.get_world_size(), dist.get_rank()
    pg = dist.group.WORLD
    out = torch.empty(2 * n)
    pg._allgather_base(out, torch.full((2,), float(r))).wait()
    assert out.tolist() == [float(p) for p in range(n) for _ in range(2)]
    small = torch.empty(2)
    pg._reduce_scatter_base(small, torch.ones(2 * n)).wait()
    assert torch.equal(small, torch.full((2,), float(n)))
    got = torch.empty(n)
    pg.alltoall_base(got, torch.arange(float(n)) + 10 * r, [], [], c10d.AllToAllOptions()).wait()
    assert got.tolist() == [10.0 * p + r for p in range(n)]
    outs, ins = [torch.empty(n), torch.empty(2 * n)], [torch.ones(1), torch.full((2,), 2.0)]
    pg.allgather_into_tensor_coalesced(outs, ins).wait()
    assert torch.equal(outs[1], torch.full((2 * n,), 2.0))


def test_work_result_wait_timeout_and_root_checks(world):
    import datetime
    n = dist.get_world_size()
    t = torch.ones(3)
    work = dist.all_reduce(t, async_op=True)
    assert work.wait(datetime.timedelta(seconds=60)) and torch.equal(work.result()[0], t)
    opts = dist.BroadcastOptions()
    opts.rootRank = n + 3
    with pytest.raises(ValueError, match=f"root {n + 3} is out of range for {n} ranks"):
        dist.group.WORLD.broadcast([torch.ones(2)], opts)


def test_premul_sum_with_a_tensor_factor_and_group_timeouts(world):
    import datetime
    n, r = dist.get_world_size(), dist.get_rank()
    t = torch.full((4,), float(r + 1))
    dist.all_reduce(t, op=dist._make_nccl_premul_sum(torch.tensor(0.5)))
    assert torch.equal(t, torch.full((4,), n * (n + 1) / 4))
    quick = dist.new_group(backend="ringps", timeout=datetime.timedelta(seconds=7))
    assert quick.comm.transport.timeout == 7.0


def _backend(group):
    return group if hasattr(group, "comm") else group._get_backend(torch.device("cpu"))


def test_two_groups_in_flight_at_once_over_shared_memory(world):
    """Each group has its own communicator, shared segments and thread; async collectives on
    both at once must not meet each other's bytes."""
    n, r = dist.get_world_size(), dist.get_rank()
    other = dist.new_group(list(range(n)), backend="ringps")
    if n > 1:
        for group in (world, other):
            assert type(_backend(group).comm.transport).__name__ == "ShmTransport"
    a = [torch.full((50_000,), float(r + 1 + i)) for i in range(6)]
    b = [torch.full((30_001,), float(10 * (r + 1) + i)) for i in range(6)]
    works = []
    for i in range(6):
        works.append(dist.all_reduce(a[i], async_op=True))
        works.append(dist.all_reduce(b[i], group=other, async_op=True))
    for work in works:
        work.wait()
    for i in range(6):
        assert torch.all(a[i] == n * (n + 1) / 2 + n * i), (i, a[i][:3])
        assert torch.all(b[i] == 10 * n * (n + 1) / 2 + n * i), (i, b[i][:3])
    dist.destroy_process_group(other)
