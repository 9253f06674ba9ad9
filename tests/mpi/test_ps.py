"""The parameter server over real MPI ranks: KV semantics, consistency guarantees proved with
deliberately slowed workers, server optimizers against torch's, sparse rows, checkpoints,
bad input, and the `ps` / `hierarchical` allreduce strategies.

Every test starts its own PS (ps.init is collective); server ranks serve until the workers
shut down and then return None, so each test body runs on the workers only."""
import os
import shutil
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

import collectives as C
import ps
from reference import assert_close, expected, inputs, make_buffer, skip_unfit, tolerance

WORLD = MPI.COMM_WORLD
pytestmark = pytest.mark.skipif(WORLD.size < 2, reason="a PS needs a server and a worker")
SERVERS = 1 if WORLD.size <= 3 else 2
W = WORLD.size - SERVERS


def run_ps(body, servers=SERVERS, **options):
    """Start a PS, run body(kv) on the workers, shut down; servers return once all are done."""
    options.setdefault("timeout", 120)
    kv = ps.init(servers=servers, exit_server=False, **options)
    if kv is None:
        return None
    try:
        return body(kv)
    finally:
        kv.shutdown()


def worker_inputs(kv, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(-50, 50, shape).astype(dtype) for _ in range(kv.size)]


def test_push_then_pull_returns_the_sum_over_workers_every_round(seed):
    def body(kv):
        keys = {"big": ((1000, 7), np.float32), 3: ((5,), np.int64), "one": ((1,), np.float64)}
        kv.init({k: np.zeros(s, d) for k, (s, d) in keys.items()})
        for round_ in range(3):
            for key, (shape, dtype) in keys.items():
                grads = worker_inputs(kv, shape, dtype, seed + round_ * 7 + len(str(key)))
                out = np.empty(shape, dtype)
                kv.wait(kv.push_pull(key, grads[kv.rank], out))
                np.testing.assert_array_equal(out, np.sum(grads, axis=0, dtype=dtype))
                assert kv.version(key) == round_ + 1
    run_ps(body, block_bytes=1000)          # "big" spans 28 blocks over the shards


def test_concurrent_pushes_to_one_key_lose_no_update(seed):
    def body(kv):
        kv.init("counter", np.zeros(257, np.int64))
        grads = worker_inputs(kv, (50, 257), np.int64, seed)
        handles = [kv.push("counter", grads[kv.rank][i]) for i in range(50)]
        for h in handles:
            kv.wait(h)
        kv.comm.barrier()
        total = kv.wait(kv.pull("counter", np.empty(257, np.int64)))
        np.testing.assert_array_equal(total, np.sum(grads, axis=(0, 1)))
    run_ps(body, consistency="asp", optimizer="accumulate", block_bytes=512)


def test_bsp_pull_waits_for_the_slowest_worker():
    """The last worker sleeps before every push; every pull must still see the full round."""
    import time

    def body(kv):
        kv.init("w", np.zeros(4, np.float64))
        for round_ in range(3):
            if kv.rank == kv.size - 1:
                time.sleep(0.2)
            grad = np.full(4, 10.0 ** round_ * (kv.rank + 1))
            out = kv.wait(kv.push_pull("w", grad, np.empty(4)))
            np.testing.assert_array_equal(out, 10.0 ** round_ * kv.size * (kv.size + 1) / 2)
    run_ps(body)


def test_asp_never_waits_for_a_slow_worker():
    """The slow worker pushes only after the others have pushed and pulled 5 times; under BSP
    that would deadlock, under ASP their pulls see only their own pushes."""
    if W < 2:
        pytest.skip("needs two workers")

    def body(kv):
        slow = kv.size - 1
        kv.init("w", np.zeros(3, np.float64))
        if kv.rank != slow:
            for i in range(5):
                kv.wait(kv.push("w", np.full(3, 1.0)))
                seen = kv.wait(kv.pull("w", np.empty(3)))
                assert (seen < 1000).all(), "a pull saw the slow worker's push"
        kv.comm.barrier()
        if kv.rank == slow:
            kv.wait(kv.push("w", np.full(3, 1000.0)))
        kv.comm.barrier()
        final = kv.wait(kv.pull("w", np.empty(3)))
        np.testing.assert_array_equal(final, 5.0 * (kv.size - 1) + 1000)
    run_ps(body, consistency="asp", optimizer="accumulate")


@pytest.mark.parametrize("staleness", [0, 2])
def test_ssp_blocks_a_worker_more_than_s_clocks_ahead(staleness):
    """Worker 0 runs ahead; its first s pulls return without the slow worker (proved by their
    values), its (s+1)-th pull waits until the slow worker has pushed once."""
    if W < 2:
        pytest.skip("needs two workers")

    def body(kv):
        slow = kv.size - 1
        kv.init("w", np.zeros(2, np.float64))
        mpi = kv.comm.mpi
        if kv.rank == 0:
            for clock in range(1, staleness + 1):
                kv.wait(kv.push("w", np.ones(2)))
                seen = kv.wait(kv.pull("w", np.empty(2)))
                assert (seen < 1000).all()
            mpi.send("go", dest=slow)
            kv.wait(kv.push("w", np.ones(2)))
            seen = kv.wait(kv.pull("w", np.empty(2)))
            assert (seen >= 1000).all(), f"clock {staleness + 1} pull did not wait: {seen}"
        elif kv.rank == slow:
            assert mpi.recv(source=0) == "go"
            kv.wait(kv.push("w", np.full(2, 1000.0)))
        else:                                   # the others keep up with worker 0
            for _ in range(staleness + 1):
                kv.wait(kv.push("w", np.ones(2)))
        kv.comm.barrier()
    run_ps(body, consistency="ssp", staleness=staleness, optimizer="accumulate")


def test_quorum_applies_rounds_without_the_straggler_and_carries_its_push_over():
    def body(kv):
        slow, fast = kv.size - 1, list(range(kv.size - 1))
        kv.init("w", np.zeros(2, np.float64))
        if kv.rank in fast:                      # round 0: the quorum, without the slow worker
            out = kv.wait(kv.push_pull("w", np.full(2, 1.0 + kv.rank), np.empty(2)))
            np.testing.assert_array_equal(out, sum(1.0 + r for r in fast))
        kv.comm.barrier()
        if kv.rank == slow:                      # late push of round 0 -> goes into round 1
            kv.wait(kv.push("w", np.full(2, 100.0)))
        kv.comm.barrier()
        third = fast[:-1]                        # W-2 more pushes complete round 1
        if kv.rank in third:
            kv.wait(kv.push("w", np.full(2, 10.0)))
        kv.comm.barrier()
        out = kv.wait(kv.pull("w", np.empty(2)))
        np.testing.assert_array_equal(out, 100.0 + 10.0 * len(third))
    if W < 2:
        pytest.skip("needs two workers")
    run_ps(body, quorum=(W - 1) / W)


TORCH_OPTIMIZERS = {
    "sgd": ({"lr": 0.1, "weight_decay": 0.01}, "SGD", {"lr": 0.1, "weight_decay": 0.01}),
    "momentum": ({"lr": 0.1, "momentum": 0.9, "nesterov": True}, "SGD",
                 {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "adam": ({"lr": 0.01}, "Adam", {"lr": 0.01}),
    "adagrad": ({"lr": 0.1}, "Adagrad", {"lr": 0.1}),
}


@pytest.mark.parametrize("name", sorted(TORCH_OPTIMIZERS))
def test_server_optimizers_match_torch(name, seed):
    torch = pytest.importorskip("torch")
    params, torch_name, torch_params = TORCH_OPTIMIZERS[name]
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((40, 3))
    grads = rng.standard_normal((4, W, 40, 3))

    def body(kv):
        kv.init("w", start.copy())
        out = np.empty_like(start)
        for step in range(4):
            kv.wait(kv.push_pull("w", grads[step, kv.rank], out))
        return out

    got = run_ps(body, optimizer=(name, {**params, "rescale": 1 / W}), block_bytes=256)
    if got is None:
        return
    p = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = getattr(torch.optim, torch_name)([p], **torch_params)
    for step in range(4):
        p.grad = torch.from_numpy(grads[step].mean(axis=0))
        opt.step()
    np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_sparse_rows_keep_per_row_optimizer_state(seed):
    """BSP push_rows with Adam: rows are summed over workers per round, and a row pushed for
    the first time in round 3 gets its first Adam step (its own step count), as torch's
    sparse-free reference shows row by row."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((30, 4))
    rounds = [[(rng.choice(30, 5), rng.standard_normal((5, 4))) for _ in range(W)]
              for _ in range(3)]

    def body(kv):
        kv.init("emb", table.copy(), optimizer=("adam", {"lr": 0.05}))
        for pushes in rounds:
            ids, grads = pushes[kv.rank]
            kv.wait(kv.push_rows("emb", ids, grads))
            kv.wait(kv.pull_rows("emb", [0]))             # waits for the round (BSP)
        return kv.wait(kv.pull_rows("emb", np.arange(30)))

    got = run_ps(body, block_bytes=64)
    if got is None:
        return
    want = table.copy()
    for row in range(30):
        p = torch.nn.Parameter(torch.from_numpy(table[row].copy()))
        opt = torch.optim.Adam([p], lr=0.05)
        for pushes in rounds:
            g = sum(grads[ids == row].sum(axis=0) for ids, grads in pushes)
            if any((ids == row).any() for ids, _ in pushes):
                p.grad = torch.from_numpy(np.asarray(g, dtype=np.float64))
                opt.step()
        want[row] = p.detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def shared_tmpdir():
    path = tempfile.mkdtemp(prefix="ringps-ckpt-") if WORLD.rank == 0 else None
    return WORLD.bcast(path, root=0)


def test_checkpoint_restores_identical_values_and_versions(seed):
    folder = shared_tmpdir()
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((64, 5))
    grads = rng.standard_normal((6, W, 64, 5))

    def train(kv, steps):
        out = np.empty_like(start)
        for step in steps:
            kv.wait(kv.push_pull("w", grads[step, kv.rank], out))
        return out, kv.version("w")

    def first(kv):
        kv.init("w", start.copy())
        train(kv, range(3))
        kv.checkpoint(folder)
        return train(kv, range(3, 6))

    def resumed(kv):
        kv.init("w", np.zeros_like(start))            # the checkpoint's value wins
        before = kv.wait(kv.pull("w", np.empty_like(start)))
        assert kv.version("w") == 3
        return before, train(kv, range(3, 6))

    options = {"optimizer": ("adam", {"lr": 0.01}), "block_bytes": 512}
    straight = run_ps(first, **options)
    again = run_ps(resumed, restore=folder, **options)
    if WORLD.rank == 0:
        shutil.rmtree(folder)
    if straight is None:
        return
    np.testing.assert_array_equal(again[1][0], straight[0])
    assert again[1][1] == straight[1] == 6


@pytest.mark.parametrize("damage", ["corrupt shard", "missing manifest", "missing shard"])
def test_a_damaged_checkpoint_is_refused_on_every_rank(damage):
    folder = shared_tmpdir()
    run_ps(lambda kv: (kv.init("w", np.ones(100)), kv.checkpoint(folder)))
    WORLD.Barrier()
    if WORLD.rank == 0:
        shard = sorted(f for f in os.listdir(folder) if f.startswith("shard-"))[0]
        if damage == "corrupt shard":
            with open(os.path.join(folder, shard), "r+b") as f:
                f.seek(100)
                f.write(b"\xff\xfe")
        elif damage == "missing manifest":
            os.remove(os.path.join(folder, "manifest.json"))
        else:
            os.remove(os.path.join(folder, shard))
    WORLD.Barrier()
    word = "corrupt" if damage == "corrupt shard" else "partial"
    with pytest.raises(ps.CheckpointError, match=word):
        ps.init(servers=SERVERS, exit_server=False, restore=folder)
    WORLD.Barrier()
    if WORLD.rank == 0:
        shutil.rmtree(folder)


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving():
    def body(kv):
        kv.init("w", np.zeros(6, np.float32))
        with pytest.raises(ps.PSError, match="dtype float64"):
            kv.push("w", np.zeros(6, np.float64))
        with pytest.raises(ps.PSError, match=r"shape \(5,\)"):
            kv.push("w", np.zeros(5, np.float32))
        with pytest.raises(KeyError, match="unknown key 'nope'"):
            kv.pull("nope", np.zeros(6, np.float32))
        with pytest.raises(ps.PSError, match="out of range"):
            kv.pull_rows("w", [6])
        # A worker whose idea of a key differs from the servers' is told so by the server.
        shape = 7 if kv.rank == kv.size - 1 and kv.size > 1 else 6
        if kv.size > 1 and kv.rank == kv.size - 1:
            with pytest.raises(ps.PSError, match="already float32 with 6 x 1"):
                kv.init("v", np.zeros(shape, np.float32))
            with pytest.raises(ps.PSError, match="expected 6 .shape mismatch"):
                kv.wait(kv.push("v", np.zeros(shape, np.float32)))
        else:
            kv.init("v", np.zeros(shape, np.float32))
        kv.comm.barrier()
        # ... and every worker's good requests still work (no update lost for other keys)
        out = kv.wait(kv.push_pull("w", np.full(6, 1.0 + kv.rank, np.float32),
                                   np.empty(6, np.float32)))
        np.testing.assert_array_equal(out, kv.size * (kv.size + 1) / 2)
        kv.shutdown()
        with pytest.raises(ps.PSError, match="shut down"):
            kv.push("w", np.zeros(6, np.float32))
    run_ps(body)


def test_roles_dedicated_and_per_node_placement():
    def check(placement, rpn):
        def body(kv):
            assert kv.comm.size == W and MPI.COMM_WORLD.rank not in kv.server_ranks
            return sorted(kv.server_ranks)
        got = run_ps(body, placement=placement, ranks_per_node=rpn)
        if got is not None and placement == "dedicated":
            assert got == list(range(W, WORLD.size))
        if got is not None and placement == "per-node":
            assert got == [min(WORLD.size, (n + 1) * rpn) - 1
                           for n in range(-(-WORLD.size // rpn))][-SERVERS:]
    check("dedicated", None)
    check("per-node", 2 if WORLD.size >= 4 else 1)


def sizes(p):
    return sorted({0, 1, max(p - 1, 0), p, p + 1, 100_003})


@pytest.mark.parametrize("algorithm", ["ps", "hierarchical"])
@pytest.mark.parametrize("rpn", [None, 2])
def test_allreduce_through_the_ps(algorithm, rpn, seed):
    """Every op and dtype, against a float64 reference; ranks_per_node=2 makes several
    nodes (and, with an odd worker count, nodes of unequal size)."""
    def body(kv):
        for dtype in C.DTYPE_NAMES:
            for op in C.OP_NAMES:
                try:
                    skip_unfit(op, dtype)
                except pytest.skip.Exception:
                    continue
                for count in sizes(kv.size):
                    values = inputs(dtype, op, count, seed + count, kv.size)
                    buf = make_buffer(values[kv.rank], dtype)
                    C.allreduce(buf, op=op, algorithm=algorithm, comm=kv.comm,
                                segment_bytes=4096)
                    assert_close(buf, expected(values, op), tolerance(values, op, dtype),
                                 f"worker {kv.rank}: {algorithm} {op} {dtype} count={count}")
    run_ps(body, ranks_per_node=rpn)


@pytest.mark.parametrize("algorithm", ["ps", "hierarchical"])
def test_allreduce_traffic_to_the_servers_matches_the_schedule(algorithm):
    """What each worker really sent to and got from the shards (kv.stats) equals what the
    strategy's schedule, which the cost model prices, says it moves."""
    rpn = 2 if W % 2 == 0 else 1

    def body(kv):
        count = 10_007
        before = kv.stats()
        C.allreduce(np.ones(count, np.float64), algorithm=algorithm, comm=kv.comm)
        after = kv.stats()
        sent = sum(a["bytes_sent"] - b["bytes_sent"] for a, b in zip(after, before))
        got = sum(a["bytes_received"] - b["bytes_received"] for a, b in zip(after, before))
        options = {"servers": kv.servers}
        if algorithm == "hierarchical":
            options["ranks_per_node"] = rpn
        schedule = C.ALGORITHMS[algorithm].allreduce_schedule(kv.size, count, 8, **options)
        to_servers = sum(t.nbytes for step in schedule.steps for t in step
                         if t.src == kv.rank and not isinstance(t.dst, int))
        from_servers = sum(t.nbytes for step in schedule.steps for t in step
                           if t.dst == kv.rank and not isinstance(t.src, int))
        assert (sent, got) == (to_servers, from_servers)
    run_ps(body, ranks_per_node=rpn)


def test_torch_tensors_are_values_too():
    torch = pytest.importorskip("torch")

    def body(kv):
        w = torch.zeros(50, 3)
        e = torch.zeros(20, 2, dtype=torch.bfloat16)
        kv.init({"w": w, "e": e})
        kv.wait(kv.push_pull("w", torch.full((50, 3), kv.rank + 1.0), w))
        assert torch.equal(w, torch.full((50, 3), kv.size * (kv.size + 1) / 2))
        kv.wait(kv.push_rows("e", torch.tensor([1, 4]), torch.ones(2, 2, dtype=torch.bfloat16)))
        rows = kv.wait(kv.pull_rows("e", [4, 1, 0]))
        assert rows.dtype == torch.bfloat16 and rows.shape == (3, 2)
        assert torch.equal(rows.float(), torch.tensor([[kv.size] * 2, [kv.size] * 2, [0, 0]],
                                                      dtype=torch.float32))
    run_ps(body)


def test_init_again_keeps_the_key_and_a_refused_init_fails_every_worker_at_once():
    """Init of a known key keeps its value and place; a different shape is refused. When a
    server refuses worker 0's init (a restored key that does not fit the job), every worker
    gets the same error at once instead of waiting out the timeout for worker 0."""
    folder = shared_tmpdir()

    def first(kv):
        kv.init("w", np.zeros(3))
        kv.wait(kv.push("w", np.ones(3)))
        kv.init("w", np.zeros(3))
        assert (kv.wait(kv.pull("w", np.empty(3))) == kv.size).all()
        with pytest.raises(ps.PSError, match=r"already float64 with shape \(3,\)"):
            kv.init("w", np.zeros(4))
        kv.checkpoint(folder)

    def resumed(kv):
        with pytest.raises(ps.PSError, match="worker 0: init failed.*rows 3, the job inits 4"):
            kv.init("w", np.zeros(4))

    run_ps(first)
    run_ps(resumed, restore=folder)
    if WORLD.rank == 0:
        shutil.rmtree(folder)
