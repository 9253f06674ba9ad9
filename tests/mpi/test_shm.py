"""The shared-memory transport (collectives/transport/shm.py): chosen as asked, moves exactly
the schedule's bytes (with no copy for arrays from collectives.empty), reuses its segments,
copes with buffers that come and go, and runs two communicators at once."""
import gc
import os
import threading
import time

import numpy as np
import pytest
from mpi4py import MPI

import collectives as C
from collectives import registry
from collectives.comm import Communicator
from collectives.transport.mpi import MPITransport
from collectives.transport.shm import ShmTransport, release_lingering
from reference import assert_close, expected, inputs, tolerance

FLAT = [a for a in C.flat_algorithms() if a != "auto"]


def _made_with(comm, **settings) -> Communicator:
    """A shared-memory communicator made while RINGPS_<setting> environment values hold."""
    names = {f"RINGPS_{k.upper()}": str(v) for k, v in settings.items()}
    old = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        return Communicator(comm.mpi, transport="shm")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.update({k: v})


@pytest.fixture(scope="module", params=["staged", "cma"])
def shm(comm, request):
    """A shared-memory communicator that takes every message, however small, through shared
    memory, its large sends staged through its segments or read from the sender's own memory
    (cross-memory attach) where the kernel allows it."""
    if comm.size < 2:
        pytest.skip("shared memory needs 2 ranks")
    made = _made_with(comm, shm_min_bytes=0, shm_cma=int(request.param == "cma"))
    if request.param == "cma" and not made.transport.cma:
        pytest.skip("this kernel refuses cross-memory attach (process_vm_readv)")
    assert made.transport.cma == (request.param == "cma")
    return made


def _allreduce_checked(comm, algorithm, dtype, count, seed, buf=None):
    values = inputs(dtype, "sum", count, seed, comm.size)
    if buf is None:
        buf = values[comm.rank].astype(dtype)
    else:
        buf[...] = values[comm.rank].astype(dtype)
    C.allreduce(buf, algorithm=algorithm, comm=comm)
    assert_close(buf, expected(values, "sum"), tolerance(values, "sum", dtype),
                 f"rank {comm.rank}: {algorithm} {dtype} count={count} over shm")
    return buf


def test_transport_follows_the_setting(comm):
    assert isinstance(Communicator(comm.mpi, transport="mpi").transport, MPITransport)
    chosen = Communicator(comm.mpi, transport="auto").transport
    if comm.size == 1:
        assert isinstance(chosen, MPITransport)      # nobody to share memory with
    else:
        assert isinstance(chosen, ShmTransport)
        assert chosen.peers == set(range(comm.size)) - {comm.rank}
    with pytest.raises(ValueError, match="unknown transport 'nvlink'"):
        Communicator(comm.mpi, transport="nvlink")


def test_pretend_nodes_use_shm_inside_and_mpi_across(comm, seed):
    """Two ranks per pretend node: peers of my node through memory, the others through MPI."""
    if comm.size < 3:
        pytest.skip("needs two pretend nodes with a pair in one")
    split = Communicator(comm.mpi, ranks_per_node=2, transport="auto")
    mine = {r for r in range(comm.size) if r // 2 == comm.rank // 2} - {comm.rank}
    assert getattr(split.transport, "peers", set()) == mine
    for algorithm in FLAT:
        for count in (0, 1, comm.size + 1, 100_003):
            _allreduce_checked(split, algorithm, "float64", count, seed + count)


def _staged(schedule, rank: int) -> int:
    """Bytes `rank` stages per call by the schedule: every send, except that the same bytes
    sent to several peers in one step (fanout: blocked's all-gather, root's broadcast) are
    staged once."""
    total = 0
    for step in schedule.steps:
        mine = [t for t in step if t.src == rank]
        total += sum(t.nbytes for t in mine if not t.fanout)
        total += max((t.nbytes for t in mine if t.fanout), default=0)
    return total


@pytest.mark.parametrize("algorithm", ["ring", "blocked", "root", "oneshot"])
def test_bytes_staged_follow_the_schedule_and_resident_arrays_are_not_copied(shm, algorithm,
                                                                             seed):
    t, n, count = shm.transport, shm.size, 50_021
    schedule = registry.ALGORITHMS.schedule(algorithm, n, count, 8)
    staged, received = _staged(schedule, shm.rank), schedule.bytes_received(shm.rank)
    before = dict(t.stats)
    _allreduce_checked(shm, algorithm, "float64", count, seed)
    moved = {k: t.stats[k] - before[k] for k in before}
    assert moved["copied"] + moved["cma"] == staged      # every send: staged, or read in place
    assert moved["cma"] == 0 or t.cma
    assert moved["received"] == received
    assert moved["referenced"] == 0
    resident = C.empty(count, "float64", comm=shm)
    before = dict(t.stats)
    _allreduce_checked(shm, algorithm, "float64", count, seed + 1, buf=resident)
    assert t.stats["copied"] - before["copied"] == 0
    assert t.stats["referenced"] - before["referenced"] == staged
    assert t.stats["received"] - before["received"] == received


def test_hand_derived_staging_for_three_algorithms(shm):
    """The staged bytes above, from the docstring tables by hand: ring sends 2(n-1) chunks,
    blocked n-1 blocks then its own block once, root's rank 0 its buffer once."""
    n, count = shm.size, 50_021
    from collectives.partition import chunk_bounds
    chunk = [(b - a) * 8 for a, b in chunk_bounds(count, n)]
    r = shm.rank
    ring = sum(chunk[(r - s - 1) % n] for s in range(n - 1)) + sum(chunk[(r - s) % n]
                                                                   for s in range(n - 1))
    blocked = sum(chunk[j] for j in range(n) if j != r) + chunk[r]
    root = 8 * count                     # rank 0 broadcasts once; the others send once
    for name, want in (("ring", ring), ("blocked", blocked), ("root", root)):
        assert _staged(registry.ALGORITHMS.schedule(name, n, count, 8), r) == want, name


def test_oneshot_stages_one_copy_for_every_peer(comm, seed):
    """The Python path (the board off): one staged copy, read by every peer."""
    if comm.size < 2:
        pytest.skip("shared memory needs 2 ranks")
    python_path = _made_with(comm, shm_min_bytes=0, shm_board=0)
    assert python_path.transport.board is None
    t, count = python_path.transport, 4099        # 16 KB: below CMA_MIN, always staged
    before = dict(t.stats)
    _allreduce_checked(python_path, "oneshot", "float32", count, seed)
    assert t.stats["copied"] - before["copied"] == 4 * count
    assert t.stats["received"] - before["received"] == (comm.size - 1) * 4 * count


@pytest.mark.parametrize("algorithm", FLAT)
def test_every_rank_gets_the_same_bits(shm, algorithm, seed):
    x = np.random.default_rng(seed + shm.rank).standard_normal(30_011).astype(np.float32)
    C.allreduce(x, algorithm=algorithm, comm=shm)
    table = np.empty((shm.size, x.size), np.float32)
    shm.mpi.Allgather(x, table)
    assert all(np.array_equal(row, x) for row in table), f"{algorithm}: ranks differ"


def test_segments_are_reused_across_sizes_and_dtypes(shm, seed):
    """Channels grow to what the largest call needs, then every call reuses them."""
    plan = [(3_000_001, "float32"), (1, "int8"), (0, "float64"), (100_003, "int64"),
            (shm.size - 1, "float16"), (777_777, "uint8"), (2_000_003, "float64")]
    for round_ in range(2):
        for i, (count, dtype) in enumerate(plan):
            for algorithm in FLAT:
                _allreduce_checked(shm, algorithm, dtype, count, seed + i)
        if round_ == 0:
            held = dict(shm.transport.segments)
    assert shm.transport.segments == held, "a call allocated new segments"
    assert len(held) <= shm.size             # a channel per peer and one fanout


def test_buffers_freed_resized_and_replaced_between_calls(shm, seed):
    for i, count in enumerate([1000, 5, 250_000, 0, 1000]):
        x = C.zeros(count, "float64", comm=shm)
        _allreduce_checked(shm, "ring", "float64", count, seed + i, buf=x)
        del x
        gc.collect()             # its segment is freed; the next may take the same number
    held = len(shm.transport.buffers)
    assert held == 0, f"{held} buffer segments outlived their arrays"
    y = np.zeros(10)
    for count in (10, 20, 5):
        y = np.resize(y, count)
        _allreduce_checked(shm, "blocked", "float64", count, seed, buf=y)


def test_empty_and_zeros_shapes_and_dtypes(comm):
    x = C.zeros((2, 3), np.int32)
    assert x.shape == (2, 3) and x.dtype == np.int32 and not x.any()
    x += comm.rank
    C.allreduce(x)
    assert (x == comm.size * (comm.size - 1) // 2).all()
    import torch
    b = C.empty(4, torch.bfloat16)
    assert b.dtype == torch.bfloat16 and b.shape == (4,)
    with pytest.raises(TypeError, match="dtype complex64 is not supported"):
        C.empty(3, np.complex64)
    with pytest.raises(ValueError, match="negative dimension"):
        C.empty((2, -1))


def test_two_communicators_in_flight_at_once(shm, seed):
    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        pytest.skip("the MPI library gives no MPI_THREAD_MULTIPLE")
    other = Communicator(shm.mpi, transport="shm")
    failures = []

    def work(comm, offset):
        try:
            for i in range(15):
                _allreduce_checked(comm, FLAT[i % len(FLAT)], "float32", 20_000 + 7 * i,
                                   seed + offset + i)
        except Exception as exc:          # reported below, on the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(c, k * 100)) for k, c in
               enumerate((shm, other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_large_sends_are_read_in_place_with_cma(shm, seed):
    from collectives.transport.shm import CMA_MIN
    t = shm.transport
    before = dict(t.stats)
    _allreduce_checked(shm, "blocked", "float32", shm.size * CMA_MIN, seed)   # blocks of CMA_MIN
    moved = {k: t.stats[k] - before[k] for k in before}
    if t.cma:
        assert moved["copied"] == 0 and moved["cma"] > 0
    else:
        assert moved["cma"] == 0 and moved["copied"] > 0


def test_messages_below_the_threshold_take_mpi(comm, seed):
    """Default RINGPS_SHM_MIN_BYTES: small messages over MPI's C path, large ones through
    memory, in one call when chunks straddle it; results the same either way."""
    if comm.size < 2:
        pytest.skip("needs 2 ranks")
    split = _made_with(comm, shm_min_bytes=4096)
    t = split.transport
    before = t.stats["received"]
    _allreduce_checked(split, "ring", "float32", 100 * comm.size, seed)      # 400-byte chunks
    assert t.stats["received"] == before
    for count in (1023 * comm.size, 1024 * comm.size, 1025 * comm.size, 5000 * comm.size + 3):
        for algorithm in FLAT:
            _allreduce_checked(split, algorithm, "float32", count, seed + count)
    assert t.stats["received"] > before


def test_close_releases_the_segments(shm, seed):
    other = _made_with(shm, shm_min_bytes=0)
    _allreduce_checked(other, "ring", "float32", 5003, seed)      # staged: below CMA_MIN
    held = [segment.fd for segment in other.transport.segments.values()]
    assert held, "the call staged nothing"
    other.barrier()                           # every peer has read what this rank sent
    other.close()
    assert other.transport.segments == {}
    for fd in held:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_close_right_after_a_call_waits_for_peers_still_reading(shm, seed):
    """Rank 0's broadcast is complete for rank 0 once its bytes are staged; it closes at
    once, while the others have not even started to read (torch's destroy_process_group
    does this). They must still map its segment and get the data."""
    if shm.size < 2:
        pytest.skip("needs 2 ranks")
    other = _made_with(shm, shm_min_bytes=0)
    x = np.random.default_rng(seed).random(5003) if shm.rank == 0 else np.zeros(5003)
    if shm.rank != 0:
        time.sleep(0.3)                       # rank 0 has sent and closed by now
    C.broadcast(x, root=0, algorithm="direct", comm=other, check=False)
    if shm.rank == 0:
        other.close()
    assert np.array_equal(x, np.random.default_rng(seed).random(5003))
    shm.barrier()                             # everyone has read: rank 0's files can go
    if shm.rank == 0:
        release_lingering()                   # what the next close does
        assert other.transport.segments == {}
