"""The device transport's protocol, on CPU: host buffers take its MPI path (tokens, numbered
data tags, staging decisions), so every flat algorithm is run through it here against a
float64 reference. The CUDA IPC path itself needs a GPU: tests/mpi/test_gpu.py."""
import numpy as np
import pytest

import collectives as C
from collectives.context import Context
from collectives import dtypes, ops
from collectives.transport.cuda_ipc import CudaIpcTransport
from reference import assert_close, expected, inputs, tolerance


@pytest.fixture(scope="module")
def transport(comm):
    return CudaIpcTransport(comm.mpi, 60.0, comm.node_of_rank)


@pytest.mark.parametrize("algorithm", ["root", "host", "blocked", "ring", "rhd"])
@pytest.mark.parametrize("dtype,op", [("float32", "sum"), ("int64", "max"), ("float64", "avg")])
def test_every_flat_algorithm_over_the_device_transport(comm, transport, algorithm, dtype, op,
                                                         seed):
    for count in sorted({0, 1, comm.size + 1, 100_003}):
        values = inputs(dtype, op, count, seed + count, comm.size)
        buf = values[comm.rank].astype(dtype)
        ctx = Context(transport, comm.rank, comm.size, dtypes.lookup(dtype), ops.lookup(op),
                      4096, comm)
        C.ALGORITHMS.function(algorithm)(buf, ctx)
        assert_close(buf, expected(values, op), tolerance(values, op, dtype),
                     f"rank {comm.rank}: {algorithm} {op} {dtype} count={count}")


def test_a_length_mismatch_is_named_not_hung(comm, transport):
    if comm.size < 2:
        pytest.skip("needs two ranks")
    if comm.rank == 0:
        transport.wait(transport.isend(np.zeros(5), 1))
    elif comm.rank == 1:
        with pytest.raises(Exception, match="rank 0 sent 40 bytes where 48 were expected"):
            transport.wait(transport.irecv(np.zeros(6), 0))
        transport.broken = None          # this test's transport only
    comm.barrier()
