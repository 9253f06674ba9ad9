"""Each algorithm moves exactly the bytes its documented schedule says (CountingTransport)."""
import numpy as np
import pytest

import collectives as C
from collectives.transport.counting import CountingTransport
from topology import auto
from reference import make_buffer


@pytest.fixture
def counted(comm):
    original = comm.transport
    comm.transport = CountingTransport(original)
    yield comm.transport
    comm.transport = original


CASES = [(collective, algorithm) for collective, registry in C.COLLECTIVES.items()
         for algorithm in registry if algorithm not in C.NEED_SERVERS]   # those: test_ps.py


@pytest.mark.parametrize("collective,algorithm", CASES)
def test_bytes_match_schedule(comm, counted, collective, algorithm):
    registry = C.COLLECTIVES[collective]
    call = getattr(C, collective)
    for count in [0, 1, comm.size + 1, 1001, 4096 * comm.size]:
        for dtype in ["float32", "float16"]:
            root = comm.size - 1
            buf = make_buffer(np.zeros(count), dtype)
            kwargs = {"root": root} if collective in ("broadcast", "reduce") else {}
            counted.reset()
            call(buf, algorithm=algorithm, segment_bytes=64, **kwargs)
            itemsize = 2 if dtype == "float16" else 4
            # auto: the schedule of its pick on this communicator (a transport without the
            # board, as this counting one, prices oneshot as its schedule, not as a post)
            ran = auto.last_choice["algorithm"] if algorithm == "auto" else algorithm
            schedule = registry.schedule(ran, comm.size, count, itemsize, root)
            what = f"rank {comm.rank}: {collective}/{algorithm} count={count} {dtype}"
            assert counted.bytes_sent == schedule.bytes_sent(comm.rank), what
            assert counted.bytes_received == schedule.bytes_received(comm.rank), what


def test_ring_moves_two_n_minus_one_over_n_and_only_to_its_neighbour(comm, counted):
    n = comm.size
    count = 1024 * n
    buf = make_buffer(np.zeros(count), "float32")
    counted.reset()
    C.allreduce(buf, algorithm="ring")
    assert counted.bytes_sent == 2 * (n - 1) * count * 4 // n
    assert set(counted.sent) <= {(comm.rank + 1) % n}


def test_root_incast_lands_on_rank_zero(comm, counted):
    count, n = 1000, comm.size
    counted.reset()
    C.allreduce(make_buffer(np.zeros(count), "float64"), algorithm="root")
    if comm.rank == 0:
        assert counted.bytes_received == (n - 1) * count * 8
        assert counted.bytes_sent == (n - 1) * count * 8
    else:
        assert dict(counted.sent) == {0: count * 8}


def test_ring_layout_moves_its_schedule_and_only_to_ring_neighbours(comm, counted):
    """Over several rings each rank sends to its successor in each ring, the bytes the
    multi-ring schedule says."""
    from collectives import ring
    from collectives.comm import Communicator
    n = comm.size
    if n < 3:
        pytest.skip("two rings need 3+ ranks (test_comm checks the refusal on 2)")
    c = Communicator(rings="bidirectional")
    c.transport = counted
    for count in [0, 1, n + 1, 1001, 4096 * n]:
        counted.reset()
        C.allreduce(make_buffer(np.zeros(count), "float32"), algorithm="ring", comm=c,
                    segment_bytes=64)
        schedule = ring.allreduce_schedule(n, count, 4, rings=c.rings)
        assert counted.bytes_sent == schedule.bytes_sent(comm.rank), count
        assert counted.bytes_received == schedule.bytes_received(comm.rank), count
        assert set(counted.sent) <= {(comm.rank + 1) % n, (comm.rank - 1) % n}
