"""Property tests for chunk and segment bounds: they tile the buffer exactly, evenly."""
from hypothesis import given, strategies as st

from collectives.partition import MAX_SEGMENTS, chunk_bounds, max_chunk, segment_bounds


@given(st.integers(0, 10 ** 7), st.integers(1, 300))
def test_chunks_tile_the_buffer_evenly(count, parts):
    bounds = chunk_bounds(count, parts)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)          # remainders go to the first chunks
    assert max(sizes) == max_chunk(count, parts)


@given(st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), st.sampled_from([1, 2, 4, 8]),
       st.integers(1, 1 << 22))
def test_segments_tile_a_chunk(start, length, itemsize, segment_bytes):
    stop = start + length
    segments = segment_bounds(start, stop, itemsize, segment_bytes)
    assert segments[0][0] == start and segments[-1][1] == stop
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
    assert 1 <= len(segments) <= MAX_SEGMENTS
    if length:
        assert all(b > a for a, b in segments)
        per = max(1, segment_bytes // itemsize)
        assert all(b - a <= max(per, -(-length // MAX_SEGMENTS)) for a, b in segments)
