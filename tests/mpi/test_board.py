"""The shared-memory board (collectives/transport/board.py, _board.c): small oneshot
allreduces and the metadata exchange in one C call, when every rank shares the node.
Results against float64 references; mismatched calls fail on every rank with a named field;
a rank on the Python path takes every rank there; the communicator stays usable."""
import numpy as np
import pytest

import collectives as C
from collectives import errors
from collectives.api import _defaults
from collectives.comm import Communicator
from collectives.transport import board
from collectives.transport.shm import ShmTransport
from reference import assert_close, expected, inputs, skip_unfit, tolerance

DTYPES = sorted(board.KINDS, key=str)


@pytest.fixture(scope="module")
def shm(comm):
    if comm.size < 2:
        pytest.skip("the board needs 2 ranks on one node")
    if board.PROBLEM is not None:
        pytest.fail(f"{board.PROBLEM}: `make venv` compiles it (setup.py)")
    made = Communicator(comm.mpi, transport="shm")
    assert isinstance(made.transport, ShmTransport) and made.transport.board is not None
    return made


def _sizes(n: int) -> list[int]:
    return sorted({0, 1, n - 1, n, n + 1, 8191})       # 8191: a prime, 32 KB of float32


@pytest.mark.parametrize("op", ["sum", "avg", "prod", "max", "min"])
@pytest.mark.parametrize("dtype", [d.name for d in DTYPES])
def test_small_oneshot_runs_on_the_board(shm, dtype, op, seed):
    skip_unfit(op, dtype)
    t = shm.transport
    for count in _sizes(shm.size):
        values = inputs(dtype, op, count, seed + 7 * count, shm.size)
        x = values[shm.rank].astype(dtype)
        before_seq, before_stats = t.board.seq, dict(t.stats)
        assert C.allreduce(x, op, "oneshot", shm) is x
        assert t.board.seq == before_seq + 1, "the call (and its check) is one board post"
        assert t.stats == before_stats, "no byte went through the channels"
        assert_close(x, expected(values, op), tolerance(values, op, dtype),
                     f"rank {shm.rank}: board {op} {dtype} count={count}")


def test_every_rank_gets_the_same_bits(shm, seed):
    x = np.random.default_rng(seed + shm.rank).standard_normal(20_011).astype(np.float32)
    C.allreduce(x, algorithm="oneshot", comm=shm)
    table = np.empty((shm.size, x.size), np.float32)
    shm.mpi.Allgather(x, table)
    assert all(np.array_equal(row, x) for row in table)


def test_integers_wrap_as_numpy_does(shm):
    x = np.full(5, 100, np.int8)
    C.allreduce(x, algorithm="oneshot", comm=shm)
    want = np.full(5, 100, np.int8)
    for _ in range(shm.size - 1):
        want = np.add(want, np.int8(100), dtype=np.int8)
    assert np.array_equal(x, want)


def test_nan_wins_max_and_min_as_numpy(shm):
    x = np.array([1.0, 2.0, 3.0], np.float64)
    if shm.rank == shm.size - 1:
        x[1] = np.nan
    for op in ("max", "min"):
        y = x.copy()
        C.allreduce(y, op, "oneshot", shm)
        assert np.isnan(y[1]) and not np.isnan(y[[0, 2]]).any(), (op, y)


@pytest.mark.parametrize("check", [True, False])
def test_different_lengths_fail_on_every_rank_and_the_next_call_works(shm, check):
    x = np.ones(10 + (shm.rank == 1), np.float32)
    with pytest.raises(errors.MismatchError, match="disagree on length"):
        C.allreduce(x, algorithm="oneshot", comm=shm, check=check)
    y = np.full(7, float(shm.rank), np.float64)
    C.allreduce(y, algorithm="oneshot", comm=shm)
    assert np.array_equal(y, np.full(7, sum(range(shm.size)), np.float64))


def test_a_rank_rejecting_its_input_is_named_on_every_rank(shm):
    x = np.ones(4, np.float32)
    if shm.rank == 1:
        with pytest.raises(errors.InputError, match="unknown reduce op"):
            C.allreduce(x, "median", "oneshot", shm)
    else:
        with pytest.raises(errors.MismatchError, match="rank 1: unknown op"):
            C.allreduce(x, "sum", "oneshot", shm)


class _Subclass(np.ndarray):
    """An ndarray subclass (as np.memmap is): the general path takes it, the board does not."""


@pytest.mark.parametrize("check", [True, False])
@pytest.mark.parametrize("how", ["segment_bytes", "subclass"])
def test_one_rank_on_the_python_path_takes_every_rank_there(shm, seed, how, check):
    """Rank 0 stays off the board (an explicit segment size, or an ndarray subclass): it
    posts its check row there all the same, even with the check off, so the others see a
    rank with no data and every rank runs the registered oneshot in Python."""
    values = inputs("float64", "sum", 4001, seed, shm.size)   # 32 KB: over shared memory
    x = values[shm.rank].copy()
    copied = shm.transport.stats["copied"]
    settings = {}
    if shm.rank == 0 and how == "segment_bytes":
        settings = {"segment_bytes": _defaults()[1]}
    elif shm.rank == 0:
        x = x.view(_Subclass)
    C.allreduce(x, "sum", "oneshot", shm, check=check, **settings)
    assert_close(np.asarray(x), expected(values, "sum"), tolerance(values, "sum", "float64"),
                 "mixed paths")
    assert shm.transport.stats["copied"] > copied, "the Python path ran"


def test_a_barrier_against_an_allreduce_fails_on_every_rank(shm):
    with pytest.raises(errors.MismatchError):
        if shm.rank == 0:
            shm.barrier()
        else:
            C.allreduce(np.ones(3, np.float32), algorithm="oneshot", comm=shm)
    y = np.ones(3, np.float32)
    C.allreduce(y, algorithm="oneshot", comm=shm)                 # still in step
    assert (y == shm.size).all()


def test_barrier_and_exchange_ride_the_board(shm):
    t = shm.transport
    seq = t.board.seq
    shm.barrier()
    table = t.exchange(np.array([shm.rank, 10 * shm.rank], np.int64))
    assert t.board.seq == seq + 2
    assert table.tolist() == [[r, 10 * r] for r in range(shm.size)]
    wide = t.exchange(np.arange(40, dtype=np.int64) + shm.rank)     # too wide: through MPI
    assert t.board.seq == seq + 2 and wide[:, 0].tolist() == list(range(shm.size))


def test_buffers_too_large_or_of_other_dtypes_take_the_python_path(shm):
    """They run in Python; their check row still goes through the board (one post, no
    data), check or not, since a peer could have taken the board."""
    t = shm.transport
    for x in (np.ones(board.CAPACITY // 4 + 1, np.float32), np.ones(8, np.float16)):
        seq = t.board.seq
        C.allreduce(x, algorithm="oneshot", comm=shm, check=False)
        assert t.board.seq == seq + 1, (x.dtype, x.size)
        assert (x == shm.size).all()


def test_a_strided_buffer_on_one_rank_is_refused_on_every_rank(shm):
    """Never posted as data: the general path refuses it, and its check row (posted even
    with the check off: a peer may be on the board) tells the other ranks why."""
    seq = shm.transport.board.seq
    x = np.ones(64, np.float32)
    if shm.rank == 0:
        with pytest.raises(errors.InputValueError, match="non-contiguous"):
            C.allreduce(x[::2], algorithm="oneshot", comm=shm, check=False)
    else:
        with pytest.raises(errors.MismatchError, match="rank 0: non-contiguous"):
            C.allreduce(x[:32], algorithm="oneshot", comm=shm, check=False)
    assert shm.transport.board.seq == seq + 1 and (x == 1).all()
