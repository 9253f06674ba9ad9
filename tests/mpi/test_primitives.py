"""reduce_scatter, allgather, broadcast, reduce: ring and direct, against a float64 reference."""
import numpy as np
import pytest

import collectives as C
from reference import assert_close, expected, inputs, make_buffer, skip_unfit, tolerance

DTYPES = ["float16", "float32", "float64", "int8", "int64"]


def sizes(p):
    return sorted({0, 1, max(p - 1, 0), p, p + 1, 100_003})


@pytest.mark.parametrize("algorithm", list(C.COLLECTIVES["reduce_scatter"]))
@pytest.mark.parametrize("op", ["sum", "max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("segment_bytes", [None, 8])
def test_reduce_scatter(comm, algorithm, op, dtype, segment_bytes, seed):
    skip_unfit(op, dtype)
    for count in sizes(comm.size):
        values = inputs(dtype, op, count, seed + count, comm.size)
        buf = make_buffer(values[comm.rank], dtype)
        mine = C.reduce_scatter(buf, op=op, algorithm=algorithm, segment_bytes=segment_bytes)
        a, b = C.chunk(count)
        assert len(mine) == b - a and (a == b or np.shares_memory(mine, buf))
        want = expected(values, op)[a:b]
        tol = tolerance(values, op, dtype)
        assert_close(mine, want, tol[a:b] if np.ndim(tol) else tol,
                     f"rank {comm.rank}: reduce_scatter {algorithm} {op} {dtype} count={count}")


@pytest.mark.parametrize("algorithm", list(C.COLLECTIVES["allgather"]))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("segment_bytes", [None, 8])
def test_allgather(comm, algorithm, dtype, segment_bytes, seed):
    for count in sizes(comm.size):
        values = inputs(dtype, "sum", count, seed + count, comm.size)
        want = np.concatenate([v[slice(*C.chunk(count, r))] for r, v in enumerate(values)])
        buf = make_buffer(np.zeros(count), dtype)
        a, b = C.chunk(count)
        buf[a:b] = make_buffer(values[comm.rank][a:b], dtype)
        assert C.allgather(buf, algorithm=algorithm, segment_bytes=segment_bytes) is buf
        assert_close(buf, want, 0.0, f"rank {comm.rank}: allgather {algorithm} {dtype} count={count}")


@pytest.mark.parametrize("algorithm", list(C.COLLECTIVES["broadcast"]))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("segment_bytes", [None, 8])
def test_broadcast_from_every_root(comm, algorithm, dtype, segment_bytes, seed):
    for root in range(comm.size):
        for count in sizes(comm.size):
            values = inputs(dtype, "sum", count, seed + count, comm.size)
            buf = make_buffer(values[comm.rank], dtype)
            C.broadcast(buf, root=root, algorithm=algorithm, segment_bytes=segment_bytes)
            assert_close(buf, values[root], 0.0,
                         f"rank {comm.rank}: broadcast {algorithm} root={root} count={count}")


@pytest.mark.parametrize("algorithm", list(C.COLLECTIVES["reduce"]))
@pytest.mark.parametrize("op", ["sum", "prod", "min", "avg"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("segment_bytes", [None, 8])
def test_reduce_to_every_root(comm, algorithm, op, dtype, segment_bytes, seed):
    skip_unfit(op, dtype)
    for root in range(comm.size):
        for count in sizes(comm.size):
            values = inputs(dtype, op, count, seed + count + root, comm.size)
            buf = make_buffer(values[comm.rank], dtype)
            C.reduce(buf, op=op, root=root, algorithm=algorithm, segment_bytes=segment_bytes)
            what = f"rank {comm.rank}: reduce {algorithm} {op} root={root} count={count}"
            if comm.rank == root:
                assert_close(buf, expected(values, op), tolerance(values, op, dtype), what)
            else:
                assert_close(buf, values[comm.rank], 0.0, what + " (non-root buffer changed)")
