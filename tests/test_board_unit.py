"""The C board (collectives/transport/_board.c) in one process: two boards over two plain
buffers stand for two ranks, driven from two threads (the C waits release the GIL). The
protocol, the reductions against numpy, the waits' deadlines and the checks on misuse."""
import threading
import time

import numpy as np
import pytest

from collectives.transport import board

pytestmark = pytest.mark.skipif(board.PROBLEM is not None, reason=str(board.PROBLEM))
CAPACITY = 4096


def _pair(n=2):
    memory = [np.zeros(board._board.DATA_AT + 2 * CAPACITY, np.uint8) for _ in range(n)]
    addresses = [m.__array_interface__["data"][0] for m in memory]
    return [board._board.Board(addresses, r, CAPACITY, 20e-6, tuple(memory))
            for r in range(n)], memory


def _row(length):
    return np.array([1, length, 2, 3, 4, 0, 1 << 20, 0], np.int64).tobytes()


def _together(calls):
    out = [None] * len(calls)

    def run(i):
        out[i] = calls[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


@pytest.mark.parametrize("op,ufunc", [(0, np.add), (1, np.multiply), (2, np.maximum),
                                      (3, np.minimum)])
@pytest.mark.parametrize("kind,dtype", sorted((k, d) for d, k in board.KINDS.items()))
def test_three_boards_reduce_in_rank_order_as_numpy(kind, dtype, op, ufunc):
    boards, _ = _pair(3)
    rng = np.random.default_rng(kind * 10 + op)
    xs = [rng.integers(-5, 6, 333).astype(dtype) if dtype.kind != "u"
          else rng.integers(0, 6, 333).astype(dtype) for _ in boards]
    want = ufunc(ufunc(xs[0], xs[1]), xs[2])
    got = [x.copy() for x in xs]
    verdicts = _together([lambda b=b, x=x: b.allreduce(x, _row(x.size), kind, op, 5.0)
                          for b, x in zip(boards, got)])
    assert verdicts == [board.DONE] * 3
    for x in got:
        assert np.array_equal(x, want)
    assert [b.seq for b in boards] == [1, 1, 1]


def test_avg_divides_once_after_the_sum():
    boards, _ = _pair(2)
    xs = [np.array([1.0, 2.0], np.float32), np.array([2.0, 5.0], np.float32)]
    _together([lambda b=b, x=x: b.allreduce(x, _row(2), 0, 4, 5.0) for b, x in zip(boards, xs)])
    assert xs[0].tolist() == xs[1].tolist() == [1.5, 3.5]


def test_rows_that_differ_are_reported_and_the_table_names_them():
    boards, _ = _pair(2)
    xs = [np.ones(3, np.float64), np.ones(4, np.float64)]
    verdicts = _together([lambda b=b, x=x: b.allreduce(x, _row(x.size), 1, 0, 5.0)
                          for b, x in zip(boards, xs)])
    assert verdicts == [board.ROWS_DIFFER] * 2
    table = np.empty((2, 8), np.int64)
    boards[0].table(table)
    assert table[:, 1].tolist() == [3, 4] and (xs[0] == 1).all()     # nothing reduced


def test_a_rank_that_posts_no_data_sends_everyone_to_python():
    boards, _ = _pair(2)
    x = np.ones(3, np.float32)
    table = np.empty((2, 8), np.int64)
    verdicts = _together([lambda: boards[0].allreduce(x, _row(3), 0, 0, 5.0),
                          lambda: boards[1].exchange(np.frombuffer(_row(3), np.int64), table,
                                                     5.0)])
    assert verdicts == [board.NO_DATA, None] and (x == 1).all()
    assert (table == np.frombuffer(_row(3), np.int64)).all()


def test_consecutive_posts_need_no_barrier():
    boards, _ = _pair(2)
    xs = [np.zeros(5, np.int64), np.zeros(5, np.int64)]

    def many(b, x, r):
        for i in range(200):
            x[:] = i + r
            assert b.allreduce(x, _row(5), 5, 0, 5.0) == board.DONE
            assert (x == 2 * i + 1).all(), (i, x)
        return True
    assert _together([lambda: many(boards[0], xs[0], 0), lambda: many(boards[1], xs[1], 1)]) \
        == [True, True]


def test_a_missing_rank_is_named_when_the_wait_ends_and_later_posts_finish_it():
    boards, _ = _pair(2)
    x = np.ones(2, np.float32)
    start = time.monotonic()
    assert boards[0].allreduce(x, _row(2), 0, 0, 0.2) == (1,)
    assert 0.15 < time.monotonic() - start < 5
    assert boards[0].wait(0.0) == (1,)
    y = np.full(2, 2.0, np.float32)
    threading.Timer(0.3, lambda: boards[1].allreduce(y, _row(2), 0, 0, 5.0)).start()
    assert boards[0].wait(float("inf")) is None        # an infinite wait still ends
    assert boards[0].finish(x, 0, 0) == board.DONE and x.tolist() == [3.0, 3.0]


def test_misuse_is_refused_not_read_past_the_slot():
    boards, _ = _pair(2)
    big = np.ones(CAPACITY // 4 + 1, np.float32)
    assert boards[0].allreduce(big, _row(big.size), 0, 0, 0.0) == board.NOT_ELIGIBLE
    assert boards[0].allreduce(np.ones(4)[::2], _row(2), 1, 0, 0.0) == board.NOT_ELIGIBLE
    assert boards[0].seq == 0                           # nothing was posted
    with pytest.raises(ValueError):
        boards[0].allreduce(np.ones(2, np.int32), _row(2), 4, 4, 0.0)     # avg of integers
    with pytest.raises(ValueError):
        boards[0].finish(big, 0, 0)
    with pytest.raises(ValueError):
        boards[0].exchange(np.zeros(31, np.int64), np.empty((2, 31), np.int64), 0.0)
    assert not board.usable(1) and board.usable(2) and not board.usable(257)
