"""The GPU path (marked gpu): device buffers through CUDA IPC and the CuPy kernels, every
algorithm x op x dtype against a float64 reference computed on the host, 1..4 ranks sharing
one GPU (or one GPU each), poisoned outputs, lengths that break 16-byte alignment.
Skipped cleanly where CuPy or a device is missing (CI never has one)."""
import numpy as np
import pytest

import collectives as C
from reference import assert_close, expected, inputs, skip_unfit, tolerance

cupy = pytest.importorskip("cupy")
try:
    DEVICES = cupy.cuda.runtime.getDeviceCount()
except Exception:                      # no driver, no device
    DEVICES = 0
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICES == 0, reason="no CUDA device"),
              pytest.mark.skipif(C.default_comm().size > 4 if DEVICES else False,
                                 reason="1..4 ranks")]
GPU_DTYPES = ["float16", "bfloat16", "float32", "float64", "int32", "int64"]
POISON = 0x7B


@pytest.fixture(autouse=True)
def my_device(comm):
    cupy.cuda.Device(comm.local_rank % DEVICES).use()
    try:
        import torch
        torch.cuda.set_device(comm.local_rank % DEVICES)
    except (ImportError, RuntimeError, AssertionError):
        pass


def device_buffer(values: np.ndarray, dtype: str):
    if dtype == "bfloat16":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(values).to(torch.bfloat16).cuda()
    return cupy.asarray(values.astype(dtype))


def to_host(buf, dtype):
    if dtype == "bfloat16":
        return buf.float().cpu().numpy()
    return cupy.asnumpy(buf).astype(np.float64)


@pytest.mark.parametrize("algorithm", C.flat_algorithms())
@pytest.mark.parametrize("op", C.OP_NAMES)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_device_allreduce(comm, algorithm, op, dtype, seed):
    skip_unfit(op, dtype)
    for count in sorted({0, 1, comm.size - 1, comm.size, comm.size + 1, 7, 100_003,
                         (1 << 20) + 3}):
        values = inputs(dtype, op, count, seed + count, comm.size)
        buf = device_buffer(values[comm.rank], dtype)
        out = C.allreduce(buf, op=op, algorithm=algorithm, segment_bytes=1 << 16)
        assert out is buf
        assert_close(to_host(buf, dtype), expected(values, op), tolerance(values, op, dtype),
                     f"rank {comm.rank}: {algorithm} {op} {dtype} count={count} on the GPU")


@pytest.mark.parametrize("op", C.OP_NAMES)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_kernel_writes_every_element_aligned_or_not(op, dtype, offset, seed):
    """out = a op b on views that start off the 16-byte grid; a poisoned out must be fully
    overwritten, and the bytes around it untouched."""
    skip_unfit(op, dtype)
    from collectives import dtypes, ops
    count = 1003
    a_vals, b_vals = inputs(dtype, op, count, seed, 2)
    storage = "uint16" if dtype == "bfloat16" else dtype
    a = cupy.asarray(_stored(a_vals, dtype))
    b = cupy.asarray(_stored(b_vals, dtype))
    out_full = cupy.full((count + offset + 1) * np.dtype(storage).itemsize, POISON, cupy.uint8)
    out = out_full.view(storage)[offset:offset + count]
    ops.combine(ops.lookup(op), dtypes.lookup(dtype), a, b, out)
    got = _unstored(cupy.asnumpy(out), dtype)
    want = expected([a_vals, b_vals], op) if op != "avg" else a_vals + b_vals
    assert_close(got, want, tolerance([a_vals, b_vals], op, dtype), f"{op} {dtype} +{offset}")
    edges = cupy.asnumpy(out_full.view(storage))
    assert (edges[:offset].view(np.uint8) == POISON).all()
    assert (edges[offset + count:].view(np.uint8) == POISON).all()


def _stored(values, dtype):
    if dtype == "bfloat16":
        import torch
        return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy() \
            .view(np.uint16)
    return values.astype(dtype)


def _unstored(stored, dtype):
    if dtype == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return stored.astype(np.float64)


def test_poisoned_receive_buffers_are_fully_written(comm):
    """Every rank but the root starts from poison: a broadcast must overwrite every
    element."""
    count = 4099
    buf = cupy.full(count, -7.0, cupy.float32)
    if comm.rank == 0:
        buf[...] = cupy.arange(count, dtype=cupy.float32)
    C.broadcast(buf, root=0, algorithm="ring", segment_bytes=1 << 12)
    assert (cupy.asnumpy(buf) == np.arange(count)).all()


def test_torch_cuda_tensors_reduce_in_place(comm):
    torch = pytest.importorskip("torch")
    t = torch.full((1001,), float(comm.rank + 1), device="cuda")
    C.allreduce(t, algorithm="ring")
    assert torch.all(t == comm.size * (comm.size + 1) / 2)


def with_ps(comm, body):
    """Run body(kv) on the workers of a one-server PS (server ranks serve, then return)."""
    import ps
    if comm.size < 2:
        pytest.skip("a PS needs a server and a worker")
    kv = ps.init(servers=1, exit_server=False, timeout=120)
    if kv is None:
        return
    try:
        body(kv)
    finally:
        kv.shutdown()


@pytest.mark.parametrize("algorithm", ["ps", "hierarchical"])
def test_device_buffers_through_the_parameter_server(comm, algorithm):
    """GPU in-node, the PS step staged through pinned host memory."""
    def body(kv):
        x = cupy.full(100_003, kv.rank + 1.0, cupy.float32)
        C.allreduce(x, algorithm=algorithm, comm=kv.comm)
        assert (cupy.asnumpy(x) == kv.size * (kv.size + 1) / 2).all()
    with_ps(comm, body)


def test_kv_values_on_the_device(comm):
    """CuPy values go through host memory to the servers and back into device memory."""
    def body(kv):
        w = cupy.zeros(1000, cupy.float32)
        kv.init("w", w)
        kv.wait(kv.push_pull("w", cupy.full(1000, kv.rank + 1.0, cupy.float32), w))
        assert (cupy.asnumpy(w) == kv.size * (kv.size + 1) / 2).all()
    with_ps(comm, body)
