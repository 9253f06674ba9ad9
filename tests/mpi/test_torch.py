"""CPU torch tensors: reduced in place through a zero-copy view, every supported dtype."""
import pytest

import collectives as C
from reference import assert_close, expected, inputs, make_buffer, tolerance

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("algorithm", C.flat_algorithms())
@pytest.mark.parametrize("dtype", C.DTYPE_NAMES)
@pytest.mark.parametrize("op", ["sum", "max", "prod"])
def test_tensor_in_place(comm, algorithm, dtype, op, seed):
    count = 2 * comm.size + 3
    values = inputs(dtype, op, count, seed, comm.size)
    t = make_buffer(values[comm.rank], dtype, kind="torch").reshape(-1, 1)
    pointer = t.data_ptr()
    assert C.allreduce(t, op=op, algorithm=algorithm) is t
    assert t.data_ptr() == pointer and t.shape == (count, 1)
    assert_close(t.reshape(-1), expected(values, op), tolerance(values, op, dtype),
                 f"rank {comm.rank}: torch {algorithm} {op} {dtype}")


def test_tensor_that_requires_grad(comm):
    """A leaf that requires grad is reduced in place through its data (like DDP's buckets)."""
    p = torch.nn.Parameter(torch.ones(6))
    assert C.allreduce(p) is p and p.requires_grad
    assert torch.equal(p.detach(), torch.full((6,), float(comm.size)))


def test_bfloat16_avg_rounds_like_torch(comm, seed):
    values = inputs("bfloat16", "avg", 1000, seed, comm.size)
    t = make_buffer(values[comm.rank], "bfloat16")
    C.allreduce(t, op="avg")
    assert_close(t, expected(values, "avg"), tolerance(values, "avg", "bfloat16"), "bf16 avg")


def test_non_contiguous_tensor_rejected(comm):
    t = torch.zeros(4, 4).t()
    with pytest.raises(ValueError, match="non-contiguous tensor"):
        C.allreduce(t)


def test_unsupported_tensor_dtype(comm):
    with pytest.raises(TypeError, match="dtype torch.int16 is not supported"):
        C.allreduce(torch.zeros(3, dtype=torch.int16))
