"""Codecs (collectives/compression.py) without MPI: round-trip error bounds as properties
(hypothesis), payload sizes, the error-feedback invariant, bad specs, the fusion planner, and
the compressed schedules' byte counts worked out by hand."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from collectives import compression as Z
from collectives.compressed import allreduce_pattern
from collectives.errors import InputError
from collectives.fusion import plan

FLOATS = st.floats(-1e4, 1e4, allow_nan=False, width=32)
VECTORS = arrays(np.float32, st.integers(0, 1200), elements=FLOATS)
SETTINGS = settings(max_examples=60, deadline=None)


def round_trip(codec, x):
    payload = codec.encode(x)
    assert payload.dtype == np.uint8 and len(payload) == codec.nbytes(len(x))
    return codec.decode(payload, len(x)).astype(np.float64)


def segments(x):
    return [x[i:i + Z.SEGMENT].astype(np.float64) for i in range(0, len(x), Z.SEGMENT)]


@SETTINGS
@given(VECTORS)
def test_fp16_rounds_to_nearest_half(x):
    got = round_trip(Z.Fp16(), x)
    assert (np.abs(got - x) <= 2.0 ** -11 * np.abs(x) + 2.0 ** -25).all()


@SETTINGS
@given(VECTORS)
def test_bf16_keeps_eight_bits_of_mantissa(x):
    got = round_trip(Z.Bf16(), x)
    assert (np.abs(got - x) <= 2.0 ** -8 * np.abs(x) + 1e-38).all()


@SETTINGS
@given(VECTORS)
def test_int8_error_is_at_most_half_a_level_of_its_segment(x):
    got = round_trip(Z.Int8(), x)
    for seg, dec in zip(segments(x), segments(got)):
        level = np.abs(seg).max() / 127
        assert (np.abs(dec - seg) <= level / 2 * (1 + 1e-5) + 1e-30).all()


@SETTINGS
@given(VECTORS)
def test_onebit_keeps_signs_and_each_segments_l1_norm(x):
    got = round_trip(Z.OneBit(), x)
    for seg, dec in zip(segments(x), segments(got)):
        if np.float32(np.abs(seg).mean()) == 0:    # a mean below float32's least subnormal
            assert (dec == 0).all()                 # (hypothesis found [-1e-45, 0]) is 0
            continue
        assert ((dec < 0) == (seg < 0)).all()
        assert np.allclose(np.abs(dec), np.abs(seg).mean(), rtol=1e-6)
        assert math.isclose(np.abs(dec).sum(), np.abs(seg).sum(), rel_tol=1e-5, abs_tol=1e-30)


@SETTINGS
@given(VECTORS, st.sampled_from([0.001, 0.01, 0.3, 1.0]))
def test_topk_keeps_the_k_largest_magnitudes_exactly(x, fraction):
    codec = Z.TopK(fraction)
    got = round_trip(codec, x)
    k = min(len(x), max(1, math.ceil(fraction * len(x)))) if len(x) else 0
    kept = codec.pairs(codec.encode(x))[0].astype(np.int64)
    assert len(set(kept.tolist())) == k
    assert (got[kept] == x[kept]).all()
    dropped = np.setdiff1d(np.arange(len(x)), kept)
    assert (got[dropped] == 0).all()
    if k and len(dropped):
        assert np.abs(x[kept]).min() >= np.abs(x[dropped]).max()


@SETTINGS
@given(VECTORS, st.sampled_from([0.01, 0.5]))
def test_randomk_sends_k_distinct_places_exactly(x, fraction):
    codec = Z.RandomK(fraction, seed=3)
    indices, values = codec.pairs(codec.encode(x))
    assert len(set(indices.tolist())) == len(indices) == codec.k(len(x))
    assert (values == x[indices.astype(np.int64)]).all()


def test_payload_sizes_by_hand():
    c = 1000                                     # 4 segments of 256
    assert Z.Fp16().nbytes(c) == Z.Bf16().nbytes(c) == 2000
    assert Z.Int8().nbytes(c) == 4 * 4 + 1000
    assert Z.OneBit().nbytes(c) == 4 * 4 + 125
    assert Z.TopK(0.01).nbytes(c) == 8 * 10 and Z.TopK(0.0001).nbytes(c) == 8   # at least 1
    assert Z.RandomK(0.5).nbytes(0) == 0 and Z.Int8().nbytes(0) == 0


@pytest.mark.parametrize("spec", ["topk:0.05+ef", "randomk:0.1+ef", "fp16+ef", "bf16+ef"])
def test_error_feedback_loses_nothing_for_integer_gradients(spec):
    """sum of what was sent (decoded) + residual == sum of the gradients, exactly: integer
    values (|x| < 256) survive every one of these codecs' arithmetic without rounding."""
    rng = np.random.default_rng(5)
    comp = Z.parse(spec)
    sent = np.zeros(333)
    gradients = np.zeros(333)
    for step in range(12):
        g = rng.integers(-20, 20, 333).astype(np.float32)
        gradients += g
        encoding = comp.begin(g.copy(), key="w")
        payload = encoding.encode(encoding.values)
        comp.end(encoding, key="w")
        sent += comp.codec.decode(payload, 333)
        assert np.array_equal(sent + comp.residual("w"), gradients), step


@pytest.mark.parametrize("spec", ["int8+ef", "onebit+ef"])
def test_error_feedback_invariant_within_rounding_for_scaled_codecs(spec):
    rng = np.random.default_rng(6)
    comp = Z.parse(spec)
    sent, gradients = np.zeros(700), np.zeros(700)
    for _ in range(10):
        g = rng.normal(0, 1, 700).astype(np.float32)
        gradients += g
        encoding = comp.begin(g.copy(), key=1)
        sent += comp.codec.decode(encoding.encode(encoding.values), 700)
        comp.end(encoding, key=1)
    assert np.allclose(sent + comp.residual(1), gradients, atol=1e-4)


def test_residuals_are_kept_per_tensor():
    comp = Z.parse("topk:0.5+ef")
    for key, value in (("a", 1.0), ("b", 100.0)):
        encoding = comp.begin(np.array([value, 0.5 * value], np.float32), key)
        encoding.encode(encoding.values)
        comp.end(encoding, key)
    assert comp.residual("a").tolist() == [0.0, 0.5] and comp.residual("b").tolist() == [0, 50]


@pytest.mark.parametrize("spec,words", [
    ("gzip", "unknown compression 'gzip'"), ("topk", "fraction must be a number in (0, 1]"),
    ("topk:0", "fraction"), ("topk:1.5", "fraction"), ("randomk:-0.1", "fraction"),
    ("topk:abc", "fraction"), ("int8:0.5", "int8 takes no argument"), ("", "codec name"),
    ("+ef", "unknown compression"), (3, "codec name")])
def test_bad_specs_are_refused_with_a_clear_message(spec, words):
    with pytest.raises(InputError) as err:
        Z.parse(spec)
    assert words in str(err.value)


def test_integer_buffers_are_refused():
    with pytest.raises(InputError, match="floating-point"):
        Z.check_dtype("int32")
    Z.check_dtype("bfloat16")


def test_fusion_plan_groups_by_dtype_and_fills_up_to_the_threshold():
    sizes = [("float32", 40), ("float64", 16), ("float32", 40), ("float32", 30),
             ("float32", 500), ("float64", 0), ("float32", 10)]
    buckets = plan(sizes, threshold=100)
    assert [(b.dtype, b.members, b.nbytes) for b in buckets] == [
        ("float32", [0, 2], 80), ("float32", [3], 30), ("float32", [4], 500),
        ("float32", [6], 10), ("float64", [1, 5], 16)]
    assert [b.members for b in plan(sizes, threshold=10 ** 9)] == [[0, 2, 3, 4, 6], [1, 5]]
    assert plan([], 100) == []


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_compressed_schedules_count_the_payload_bytes(n):
    count = 10007
    p = 8 * math.ceil(0.01 * count)              # topk:0.01 payload, the same on every rank
    ring = allreduce_pattern("ring", n, count, "topk:0.01").expand()
    assert all(ring.bytes_sent(r) == (n - 1) * p for r in range(n))
    blocked = allreduce_pattern("blocked", n, count, "topk:0.01").expand()
    assert all(blocked.bytes_sent(r) == (n - 1) * p for r in range(n))
    root = allreduce_pattern("root", n, count, "topk:0.01").expand()
    assert root.bytes_sent(0) == (n - 1) * (n - 1) * p
    assert all(root.bytes_sent(r) == p for r in range(1, n))
    dense = allreduce_pattern("ring", n, count, "fp16").expand()
    assert sum(dense.bytes_sent(r) for r in range(n)) == 2 * (n - 1) * 2 * count
    host = allreduce_pattern("host", n, count, "fp16").expand()
    assert all(host.bytes_sent(r) == 2 * count for r in range(1, n))
