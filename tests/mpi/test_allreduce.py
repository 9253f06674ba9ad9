"""Every allreduce algorithm x op x dtype x size, against a float64 reference."""
import numpy as np
import pytest

import collectives as C
from reference import assert_close, expected, inputs, make_buffer, skip_unfit, tolerance

DTYPES = C.DTYPE_NAMES
OPS = C.OP_NAMES
FEW_MB = 2 ** 21


def sizes(p):
    return sorted({0, 1, max(p - 1, 0), p, p + 1, 100_003})


def _check(comm, algorithm, op, dtype, count, seed, segment_bytes=None):
    values = inputs(dtype, op, count, seed, comm.size)
    buf = make_buffer(values[comm.rank], dtype)
    out = C.allreduce(buf, op=op, algorithm=algorithm, segment_bytes=segment_bytes)
    assert out is buf
    assert_close(buf, expected(values, op), tolerance(values, op, dtype),
                 f"rank {comm.rank}: {algorithm} {op} {dtype} count={count}")


@pytest.mark.parametrize("algorithm", C.flat_algorithms())
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_and_prime_sizes(comm, algorithm, op, dtype, seed):
    skip_unfit(op, dtype)
    for count in sizes(comm.size):
        _check(comm, algorithm, op, dtype, count, seed + 1000 * count)


@pytest.mark.parametrize("algorithm", C.flat_algorithms())
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_few_megabytes(comm, algorithm, op, dtype, seed):
    skip_unfit(op, dtype)
    count = FEW_MB // np.dtype("uint16" if dtype == "bfloat16" else dtype).itemsize + 3
    _check(comm, algorithm, op, dtype, count, seed, segment_bytes=1 << 17)


@pytest.mark.parametrize("algorithm", C.flat_algorithms())
@pytest.mark.parametrize("segment_bytes", [4, 12, 1000])
def test_pipelined_segments(comm, algorithm, segment_bytes, seed):
    """Tiny segments make every chunk many messages: the pipeline's order must hold."""
    for count in sizes(comm.size)[:-1] + [997]:
        _check(comm, algorithm, "sum", "float32", count, seed + count, segment_bytes)


def test_multidimensional_array_reduced_in_place(comm, seed):
    values = inputs("float64", "sum", 24, seed, comm.size)
    buf = values[comm.rank].reshape(2, 3, 4).copy()
    C.allreduce(buf, algorithm="ring")
    assert buf.shape == (2, 3, 4)
    assert_close(buf.reshape(-1), expected(values, "sum"), 1e-12, "3-D array")


def test_back_to_back_calls_on_one_buffer(comm, seed):
    """Consecutive collectives must not match each other's messages."""
    buf = np.full(1001, comm.rank + 1, dtype=np.int64)
    for algorithm in C.flat_algorithms() * 3:
        C.allreduce(buf, algorithm=algorithm, check=False)
    total = sum(range(1, comm.size + 1))
    assert (buf == total * comm.size ** (len(C.flat_algorithms()) * 3 - 1)).all()
