"""Ring layouts (collectives/rings.py): reading them, refusing bad ones, splitting the buffer,
and the multi-ring schedule the ring allreduce follows."""
import pytest

from collectives import ring
from collectives.rings import LayoutError, RingLayout


def test_named_layouts():
    assert RingLayout.parse(None, 4).is_rank_order
    assert RingLayout.parse("rank-order", 4).is_rank_order
    both = RingLayout.parse("bidirectional", 4)
    assert both.orders == ((0, 1, 2, 3), (3, 2, 1, 0)) and both.weights == (1.0, 1.0)
    assert not both.is_rank_order


def test_orders_and_weights_read_back():
    layout = RingLayout.parse("0-1-2-3-4-5-6-7:2, 0-3-5-2-4-7-1-6", 8)
    assert layout.orders[1] == (0, 3, 5, 2, 4, 7, 1, 6) and layout.weights == (2.0, 1.0)
    assert RingLayout.parse(layout.text, 8) == layout


@pytest.mark.parametrize("text,size,words", [
    ("0-1-2", 4, "exactly once"),
    ("0-1-1-3", 4, "exactly once"),
    ("0-1-2-3,0-1-3-2", 4, "both send from rank 0 to rank 1"),
    ("bidirectional", 2, "both send from rank 1 to rank 0"),
    ("0-1-2-3:0", 4, "positive"),
    ("0-1-2-3:-1", 4, "positive"),
    ("0-1-2-3:nan", 4, "positive"),
    ("0-1-2-x", 4, "cannot read ring"),
    ("sideways", 4, "cannot read ring"),
])
def test_bad_layouts_are_refused_with_the_reason(text, size, words):
    with pytest.raises(LayoutError, match=words):
        RingLayout.parse(text, size)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 100_003])
@pytest.mark.parametrize("weights", [(2, 1), (1, 1, 1), (5, 1e-9, 3, 0.25)])
def test_parts_follow_the_weights_and_cover_the_buffer(count, weights):
    layout = RingLayout(tuple((0, 1, 2) for _ in weights), tuple(map(float, weights)))
    bounds = layout.bounds(count)
    assert [a for a, _ in bounds[1:]] == [b for _, b in bounds[:-1]]
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    total, running = sum(weights), 0.0
    for (a, b), weight in zip(bounds, weights):
        assert a <= b and abs(b - count * (running + weight) / total) <= 0.5 + 1e-9
        running += weight


def test_text_reads_back_to_the_very_same_weights():
    """Ranks compare layouts exactly: text must not round a weight."""
    layout = RingLayout(((0, 1, 2), (2, 1, 0)), (1.000004, 1.0))
    assert RingLayout.parse(layout.text, 3) == layout
    assert RingLayout.parse(layout, 3) is layout


def test_multi_ring_schedule_moves_the_same_bytes_over_every_ring():
    n, count = 5, 1000 * 5 * 3
    layout = RingLayout.parse("0-1-2-3-4:2,0-2-4-1-3:1", n)
    schedule = ring.allreduce_schedule(n, count, 4, rings=layout)
    plain = ring.allreduce_schedule(n, count, 4)
    assert len(schedule.steps) == len(plain.steps) == 2 * (n - 1)
    for r in range(n):
        assert schedule.bytes_sent(r) == plain.bytes_sent(r) == 2 * (n - 1) * count * 4 // n
    # each rank sends only to its successor in each ring, 2/3 and 1/3 of its bytes
    sent = {}
    for step in schedule.steps:
        for t in step:
            sent[t.src, t.dst] = sent.get((t.src, t.dst), 0) + t.nbytes
    for order, share in zip(layout.orders, (2 / 3, 1 / 3)):
        for a, b in zip(order, order[1:] + order[:1]):
            assert sent.pop((a, b)) == pytest.approx(share * plain.bytes_sent(a), rel=1e-3)
    assert not sent
    assert ring.allreduce_schedule(n, count, 4, rings="0-1-2-3-4").steps == plain.steps
