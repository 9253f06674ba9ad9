"""Compressed allreduce on real ranks: every strategy and codec against a float64 reference
that replays the same codec on every rank's input (each rank draws every rank's input), the
error-feedback invariant across ranks, bytes on the wire against the compressed schedule,
bad input refused on every rank with nothing sent, and tensor fusion."""
import numpy as np
import pytest
from mpi4py import MPI

import collectives as C
from collectives.compressed import allreduce_pattern
from collectives.compression import parse
from collectives.errors import InputError, MismatchError
from collectives.partition import chunk_bounds
from collectives.transport.counting import CountingTransport

WORLD = MPI.COMM_WORLD
FLAT = ["root", "host", "blocked", "ring"]
CODECS = ["fp16", "bf16", "int8", "onebit", "topk:0.1", "randomk:0.2", "topk:0.05+ef",
          "int8+ef"]


def sizes(n):
    return sorted({0, 1, max(n - 1, 0), n, n + 1, 1009})


def draw(seed, count, ranks):
    return [np.random.default_rng(seed + r).uniform(-2, 2, count).astype(np.float32)
            for r in range(ranks)]


def encoded(comp, values):
    """What one encode of `values` (as float32) on a replayed rank decodes to, in float64."""
    v = np.asarray(values, np.float32)
    decoded = comp.codec.decode(comp.codec.encode(v), len(v)).astype(np.float64)
    return decoded


def reference(algorithm, spec, xs, n):
    """What `algorithm` computes with codec `spec` (compressed.py's table), in float64, with
    each encode applied to float32 values as the ranks do."""
    codecs = [parse(spec.removesuffix("+ef")) for _ in range(n)]   # each rank's own codec
    count = len(xs[0])
    if codecs[0].codec.sparse:
        return sum(encoded(codecs[r], xs[r]) for r in range(n)) if count else np.zeros(0)
    f32 = lambda v: np.asarray(v, np.float32)                  # noqa: E731

    def reduced(own, others):
        """The reducer adds the decoded payloads to its own values one by one, each sum
        rounded to float32 (as it is there) before it is encoded again."""
        total = own.astype(np.float64)
        for decoded in others:
            total = f32(total + decoded).astype(np.float64)
        return total

    if algorithm in ("root", "host"):
        total = reduced(xs[0], [encoded(codecs[r], xs[r]) for r in range(1, n)])
        return encoded(codecs[0], f32(total))
    bounds = chunk_bounds(count, n)
    out = np.empty(count)
    for c, (a, b) in enumerate(bounds):
        if algorithm == "blocked":
            total = reduced(xs[c][a:b], [encoded(codecs[r], xs[r][a:b])
                                         for r in range(n) if r != c])
        else:                                    # ring: starts at rank c+1, ends at c
            total = xs[(c + 1) % n][a:b].astype(np.float64)
            for hop in range(2, n + 1):
                r = (c + hop) % n
                total = encoded(codecs[r], f32(total)) + xs[r][a:b]
        out[a:b] = encoded(codecs[c], f32(total))
    return out


def gathered(x):
    everyone = np.empty((WORLD.size, len(x)), x.dtype)
    WORLD.Allgather(np.ascontiguousarray(x), everyone)
    return everyone


@pytest.mark.parametrize("algorithm", FLAT)
@pytest.mark.parametrize("spec", CODECS)
def test_compressed_allreduce_matches_the_codec_replayed_in_float64(comm, algorithm, spec,
                                                                    seed):
    n, r = comm.size, comm.rank
    for count in sizes(n):
        xs = draw(seed + count, count, n)
        x = xs[r].copy()
        C.allreduce(x, algorithm=algorithm, compression=parse(spec), comm=comm)
        assert (gathered(x) == x).all(), "ranks hold different results"
        expected = reference(algorithm, spec, xs, n)
        magnitude = np.sum(np.abs(xs), axis=0) if count else 0
        assert np.allclose(x, expected, rtol=0, atol=1e-6 * (1 + magnitude)), \
            (algorithm, spec, count, np.abs(x - expected).max())


@pytest.mark.parametrize("algorithm", FLAT)
@pytest.mark.parametrize("spec", ["int8+ef", "onebit+ef", "fp16+ef", "topk:0.02+ef"])
def test_error_feedback_accounts_for_every_encode_of_every_rank(comm, algorithm, spec, seed):
    """result + the residuals of all ranks == the sum of what the ranks brought (their
    gradients plus their old residuals), step after step, re-encoded partial sums included."""
    n, r = comm.size, comm.rank
    comp = parse(spec)
    count = 1009
    brought = np.zeros(count)
    for step in range(3):
        xs = draw(seed + 10 * step, count, n)
        old = comp.residual("g")
        brought = np.sum(xs, axis=0, dtype=np.float64) + (
            gathered(old).sum(0) if old is not None else 0)
        x = xs[r].copy()
        C.allreduce(x, algorithm=algorithm, compression=comp, key="g", comm=comm)
        left = gathered(comp.residual("g")).astype(np.float64).sum(0)
        assert np.allclose(x + left, brought, atol=1e-4 * n), (step, np.abs(x + left - brought).max())


def test_average_divides_the_compressed_sum(comm, seed):
    xs = draw(seed, 50, comm.size)
    total, avg = xs[comm.rank].copy(), xs[comm.rank].copy()
    C.allreduce(total, compression="fp16", comm=comm)
    C.allreduce(avg, op="avg", compression="fp16", comm=comm)
    assert np.allclose(avg, total / comm.size, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_other_float_dtypes_compute_in_float32(comm, dtype, seed):
    torch = pytest.importorskip("torch")
    xs = [np.round(v * 8) / 8 for v in draw(seed, 301, comm.size)]    # exact in every dtype
    x = torch.from_numpy(xs[comm.rank].astype(np.float64)).to(getattr(torch, dtype))
    C.allreduce(x, algorithm="ring", compression="topk:1.0", comm=comm)
    assert torch.equal(x.double(), torch.from_numpy(np.sum(xs, 0, dtype=np.float64)).to(
        getattr(torch, dtype)).double())


@pytest.mark.parametrize("algorithm", FLAT)
@pytest.mark.parametrize("spec", ["int8", "topk:0.01", "onebit"])
def test_bytes_on_the_wire_are_the_compressed_schedules(comm, algorithm, spec):
    n, r = comm.size, comm.rank
    count = 10007
    counting = CountingTransport(comm.transport)
    plain, comm.transport = comm.transport, counting
    try:
        C.allreduce(np.ones(count, np.float32), algorithm=algorithm, compression=spec,
                    comm=comm)
    finally:
        comm.transport = plain
    schedule = allreduce_pattern(algorithm, n, count, spec).expand()
    assert counting.bytes_sent == schedule.bytes_sent(r)
    assert counting.bytes_received == schedule.bytes_received(r)


@pytest.mark.parametrize("bad,words", [
    ({"compression": "gzip"}, "unknown compression"),
    ({"compression": "topk:2"}, "fraction"),
    ({"compression": "int8", "op": "max"}, "op must be one of sum, avg"),
    ({"compression": "int8", "algorithm": "auto"}, "compressed allreduce runs with"),
    ({"dtype": np.int32}, "floating-point")])
def test_bad_input_on_one_rank_fails_every_rank_and_sends_nothing(comm, bad, words):
    n, r = comm.size, comm.rank
    culprit = n - 1
    x = np.arange(11, dtype=bad.get("dtype", np.float32) if r == culprit else np.float32)
    kwargs = {"compression": "int8", "algorithm": "ring", "op": "sum"}
    if r == culprit:
        kwargs.update({k: v for k, v in bad.items() if k != "dtype"})
    before = x.copy()
    with pytest.raises((InputError, MismatchError)) as err:
        C.allreduce(x, comm=comm, **kwargs)
    if r == culprit:
        assert words in str(err.value)
    elif n > 1:
        assert f"rank {culprit}" in str(err.value)
    assert (x == before).all()


def test_ranks_with_different_codecs_fail_alike(comm):
    if comm.size < 2:
        pytest.skip("needs two ranks")
    x = np.ones(8, np.float32)
    with pytest.raises(MismatchError, match="disagree on the compression"):
        C.allreduce(x, compression="int8" if comm.rank else "fp16", comm=comm)


# ---- tensor fusion --------------------------------------------------------------------------

def fusion_inputs(seed, n):
    torch = pytest.importorskip("torch")
    shapes = [(5,), (0,), (3, 4), (1,), (n + 1,), (2, 0), (1009,)]
    kinds = [np.float32, np.float64, np.int32, torch.bfloat16, np.float16, np.float32, np.int64]
    per_rank = []
    for r in range(n):
        rng = np.random.default_rng(seed + r)
        mine = []
        for shape, kind in zip(shapes, kinds):
            values = rng.integers(-40, 40, shape).astype(np.float64)
            mine.append(torch.from_numpy(values).to(kind) if kind is torch.bfloat16
                        else values.astype(kind))
        per_rank.append(mine)
    return per_rank


@pytest.mark.parametrize("threshold", [1, 64, 1 << 26])
@pytest.mark.parametrize("algorithm", FLAT)
def test_allreduce_coalesced_mixed_dtypes_sizes_and_empty_tensors(comm, threshold, algorithm,
                                                                  seed):
    torch = pytest.importorskip("torch")
    per_rank = fusion_inputs(seed, comm.size)
    mine = [t.clone() if isinstance(t, torch.Tensor) else t.copy() for t in per_rank[comm.rank]]
    result = C.allreduce_coalesced(mine, algorithm=algorithm, threshold=threshold, comm=comm)
    assert result is not None and len(result) == len(mine)
    for k, t in enumerate(mine):
        expected = sum(np.asarray(per_rank[r][k].double() if isinstance(t, torch.Tensor)
                                  else per_rank[r][k], np.float64) for r in range(comm.size))
        got = t.double().numpy() if isinstance(t, torch.Tensor) else t.astype(np.float64)
        assert got.shape == np.shape(expected) and np.array_equal(got, expected), k
        assert t.dtype == per_rank[comm.rank][k].dtype


def test_allreduce_coalesced_async_handle_and_compression(comm, seed):
    n = comm.size
    xs = [draw(seed + k, size, n) for k, size in enumerate([300, 7, 0, 41])]
    mine = [x[comm.rank].copy() for x in xs]
    handle = C.allreduce_coalesced(mine, async_op=True, comm=comm, threshold=1 << 10)
    assert handle.wait() is handle.tensors and handle.done()
    for x, t in zip(xs, mine):
        assert np.allclose(t, np.sum(x, 0, dtype=np.float64), atol=1e-5)
    mine = [x[comm.rank].copy() for x in xs]
    C.allreduce_coalesced(mine, comm=comm, compression="topk:1.0")      # keeps everything
    for x, t in zip(xs, mine):
        assert np.allclose(t, np.sum(x, 0, dtype=np.float64), atol=1e-5)


def test_allreduce_coalesced_refuses_bad_input_before_sending(comm):
    with pytest.raises(InputError, match="threshold"):
        C.allreduce_coalesced([np.ones(3, np.float32)], threshold=0, comm=comm)
    with pytest.raises(InputError):
        C.allreduce_coalesced([np.ones(3, np.float32), "not a tensor"], comm=comm)


def test_compression_none_is_the_plain_allreduce(comm, seed):
    xs = draw(seed, 33, comm.size)
    x = xs[comm.rank].copy()
    C.allreduce(x, compression="none", comm=comm)
    assert np.allclose(x, np.sum(xs, 0, dtype=np.float64), atol=1e-5)
