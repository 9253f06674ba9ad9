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


def layouts(n):
    """Ring layouts that fit n ranks: both directions and a weighted pair (n = 1 or n >= 3),
    and three rings (n = 5: i -> i+2 shares no edge with i -> i+1 or i -> i-1)."""
    if n == 2:
        return []
    forward = "-".join(map(str, range(n)))
    backward = "-".join(map(str, reversed(range(n))))
    found = ["bidirectional", f"{forward}:3,{backward}:1"]
    if n == 5:
        found.append(f"{forward},{backward},{'-'.join(str(2 * i % n) for i in range(n))}:0.5")
    return found


@pytest.fixture(scope="module")
def layout_comms(comm):
    from collectives.comm import Communicator
    return {text: Communicator(rings=text) for text in layouts(comm.size)}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ring_over_several_rings(comm, layout_comms, op, dtype, seed):
    """Each ring of the layout reduces its share; the result is the same allreduce."""
    skip_unfit(op, dtype)
    if not layout_comms:
        pytest.skip("no two rings fit 2 ranks without sharing an edge (test_comm: refused)")
    for text, c in layout_comms.items():
        assert c.rings is not None and len(c.rings.orders) >= 2
        for count in sizes(comm.size):
            values = inputs(dtype, op, count, seed + count, comm.size)
            buf = make_buffer(values[comm.rank], dtype)
            C.allreduce(buf, op=op, algorithm="ring", comm=c,
                        segment_bytes=64 if count < 1000 else 4096)
            assert_close(buf, expected(values, op), tolerance(values, op, dtype),
                         f"rank {comm.rank}: ring over {text} {op} {dtype} count={count}")
