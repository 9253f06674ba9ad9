"""Schedules (serially): the byte counts the d2l chapter's cost formulas rest on."""
import pytest

from collectives import ALGORITHMS, COLLECTIVES, NEED_SERVERS

S = 160 * 10 ** 6      # d2l's 160 MB gradient, in float32


@pytest.mark.parametrize("n", [2, 4, 8])
def test_byte_counts_behind_the_d2l_costs(n):
    count = S // 4
    sent = {name: ALGORITHMS.schedule(name, n, count, 4) for name in ALGORITHMS}
    # root: rank 0's link carries (n-1)S in and (n-1)S out
    assert sent["root"].bytes_received(0) == sent["root"].bytes_sent(0) == (n - 1) * S
    # host: the extra endpoint sees n gradients (one of them a local copy on CPU buffers)
    host_in = sum(t.nbytes for t in sent["host"].steps[0])
    assert host_in == n * S
    # blocked and ring: 2(n-1)/n * S per rank, the allreduce lower bound
    for name in ("blocked", "ring"):
        for r in range(n):
            assert sent[name].bytes_sent(r) == pytest.approx(2 * (n - 1) / n * S, abs=8)
    assert len(sent["ring"].steps) == 2 * (n - 1) and len(sent["blocked"].steps) == 2


WIRE = {"allreduce": 2, "reduce_scatter": 1, "allgather": 1, "broadcast": 1, "reduce": 1}


@pytest.mark.parametrize("n", [2, 3, 5])
def test_every_schedule_puts_its_textbook_bytes_on_the_wire(n):
    """Summed over ranks: (n-1)*S for each primitive and 2(n-1)*S for allreduce, whatever
    the strategy but oneshot; they differ in *which* links carry it, not how much."""
    count, itemsize = 1000 * n, 8
    size = count * itemsize
    for collective, registry in COLLECTIVES.items():
        for name in (n_ for n_ in registry if n_ not in NEED_SERVERS):   # those: test_ps_*
            schedule = registry.schedule(name, n, count, itemsize, root=n - 1)
            total = sum(schedule.bytes_sent(r) for r in range(n))
            textbook = WIRE[collective] * (n - 1) * size
            if name == "auto":          # auto's schedule is its pick's
                from topology.auto import choose
                name = choose(n, size, itemsize=itemsize)[0]
            if name == "oneshot":       # buys one step with bandwidth: every rank sends its
                textbook = n * (n - 1) * size   # whole buffer to every other, n(n-1)S
            assert total == textbook, (collective, name)
            assert total == sum(schedule.bytes_received(r) for r in range(n))
