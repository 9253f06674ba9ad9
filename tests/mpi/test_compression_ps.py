"""Compressed `ps` and `hierarchical` (ps/compressed.py): pushes encoded, servers decode
before summing. Sparse codecs through `ps` against the codec replayed per part in float64,
every codec on both strategies with the error-feedback invariant, and the bytes the workers
push against the compressed schedule."""
import numpy as np
import pytest
from mpi4py import MPI

import collectives as C
import ps
from collectives.compressed import allreduce_pattern
from collectives.compression import parse
from test_ps import run_ps
from collectives.partition import chunk_bounds

WORLD = MPI.COMM_WORLD
pytestmark = pytest.mark.skipif(WORLD.size < 2, reason="a PS needs a server and a worker")


def draw(seed, count, ranks):
    return [np.random.default_rng(seed + r).uniform(-2, 2, count).astype(np.float32)
            for r in range(ranks)]


def gathered(kv, x):
    everyone = np.empty((kv.size, len(x)), x.dtype)
    kv.comm.mpi.Allgather(np.ascontiguousarray(x), everyone)
    return everyone


@pytest.mark.parametrize("spec", ["topk:0.1", "randomk:0.3"])
def test_sparse_pushes_are_summed_from_their_pairs(spec, seed):
    def body(kv):
        for count in (0, 1, kv.size + 1, 1009):
            xs = draw(seed + count, count, kv.size)
            x = xs[kv.rank].copy()
            C.allreduce(x, algorithm="ps", compression=parse(spec), comm=kv.comm)
            expected = np.zeros(count)
            parts = [(a, b) for a, b in chunk_bounds(count, kv.servers) if b > a]
            for r in range(kv.size):          # each worker's parts, each its own payload
                codec = parse(spec).codec
                for a, b in parts:
                    expected[a:b] += codec.decode(codec.encode(xs[r][a:b]), b - a)
            assert np.allclose(x, expected, atol=1e-6 * (1 + np.abs(xs).sum(0)) if count
                               else 0), (spec, count)
    run_ps(body)


@pytest.mark.parametrize("algorithm", ["ps", "hierarchical"])
@pytest.mark.parametrize("spec", ["fp16+ef", "int8+ef", "onebit+ef", "topk:0.05+ef"])
def test_every_codec_with_error_feedback_loses_nothing(algorithm, spec, seed):
    def body(kv):
        comp = parse(spec)
        for step in range(2):
            xs = draw(seed + step, 1009, kv.size)
            old = comp.residual("g")
            brought = np.sum(xs, 0, dtype=np.float64) + (gathered(kv, old).sum(0)
                                                         if old is not None else 0)
            x = xs[kv.rank].copy()
            C.allreduce(x, algorithm=algorithm, compression=comp, key="g", comm=kv.comm)
            assert (gathered(kv, x) == x).all()
            left = gathered(kv, comp.residual("g")).astype(np.float64).sum(0)
            assert np.allclose(x + left, brought, atol=1e-4 * kv.size)
    run_ps(body, ranks_per_node=2)


def test_pushes_carry_the_compressed_bytes_of_the_schedule():
    def body(kv):
        count = 10_007
        before = kv.stats()
        C.allreduce(np.ones(count, np.float32), algorithm="ps", compression="int8",
                    comm=kv.comm)
        after = kv.stats()
        sent = sum(a["bytes_sent"] - b["bytes_sent"] for a, b in zip(after, before))
        got = sum(a["bytes_received"] - b["bytes_received"] for a, b in zip(after, before))
        schedule = allreduce_pattern("ps", kv.size, count, "int8", servers=kv.servers).expand()
        to_servers = sum(t.nbytes for step in schedule.steps for t in step
                         if t.src == kv.rank and not isinstance(t.dst, int))
        from_servers = sum(t.nbytes for step in schedule.steps for t in step
                           if t.dst == kv.rank and not isinstance(t.src, int))
        assert (sent, got) == (to_servers, from_servers)
        assert count < sent < 0.26 * 4 * count      # a byte per element and a scale per 256
    run_ps(body)


@pytest.mark.parametrize("spec", ["topk:0.1", "int8", "fp16+ef"])
def test_kv_pushes_are_decoded_by_the_server_before_its_optimizer(spec, seed):
    """push_pull of a compressed gradient: the server's sum handler sees what each worker's
    blocks decode to (blocks of 1000 bytes: the key spans several, each encoded alone);
    fp16+ef on integers loses nothing, so the sum is exact."""
    def body(kv):
        shape = (300, 2)
        kv.init("w", np.zeros(shape, np.float32))
        blocks = [(b.start * 2, b.stop * 2) for b in kv._info("w").blocks]
        assert len(blocks) > 1
        codec = parse(spec).codec
        for step in range(2):
            grads = [np.random.default_rng(seed + 10 * step + r).integers(-99, 99, shape)
                     .astype(np.float32) for r in range(kv.size)]
            out = np.empty(shape, np.float32)
            kv.wait(kv.push_pull("w", grads[kv.rank], out, compression=spec))
            expected = np.zeros(600)
            for r in range(kv.size):
                flat = grads[r].reshape(-1)
                for a, b in blocks:
                    expected[a:b] += codec.decode(codec.encode(flat[a:b]), b - a)
            assert np.allclose(out.reshape(-1), expected, atol=1e-4), (spec, step)
    run_ps(body, block_bytes=1000)


def test_kv_push_of_an_integer_key_with_a_codec_is_refused():
    def body(kv):
        kv.init("n", np.zeros(10, np.int64))
        with pytest.raises(ps.PSError, match="floating-point"):
            kv.push("n", np.ones(10, np.int64), compression="int8")
    run_ps(body)
