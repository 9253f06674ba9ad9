"""Schedule.memory: the bytes a rank's memory reads and writes per call, by transport, held to
figures derived by hand from the table in its docstring."""
from collectives import oneshot, ring, root


def test_ring_on_two_ranks():
    # 8 float32 = 32 bytes; each rank sends one 16-byte chunk per phase
    schedule = ring.allreduce_schedule(2, 8, 4)
    # shm: stage 2 x 16 (r 32, w 32); reduce 16 from the peer (r 32, w 16); copy 16 (r 16, w 16)
    assert schedule.memory(0, "shm") == (80, 64)
    # resident buffers: no staging
    assert schedule.memory(0, "shm", resident=True) == (48, 32)
    # mpi: every receive first copies out of MPICH's cell (r 16, w 16 each)
    assert schedule.memory(0, "mpi") == (112, 96)


def test_oneshot_stages_once_for_every_peer():
    # 3 ranks, 30 bytes each: one staged copy (r 30, w 30), two reductions (r 60, w 30 each)
    schedule = oneshot.allreduce_schedule(3, 30, 1)
    assert schedule.memory(1, "shm") == (150, 90)
    # over MPI each of the two sends is its own copy into a cell, and each receive copies out
    assert schedule.memory(1, "mpi") == (60 + 2 * (30 + 60), 60 + 2 * (30 + 30))


def test_root_broadcast_is_a_fanout_and_the_reduce_is_not():
    schedule = root.allreduce_schedule(3, 10, 1)
    # rank 0: reduce 2 x 10 from peers (r 40, w 20); broadcast staged once (r 10, w 10)
    assert schedule.memory(0, "shm") == (50, 30)
    # rank 1: stage its 10 bytes (r 10, w 10); copy the result from rank 0 (r 10, w 10)
    assert schedule.memory(1, "shm") == (20, 20)


def test_large_transfers_read_in_place_are_not_staged():
    schedule = ring.allreduce_schedule(2, 8, 4)
    # with cross-memory attach from 16 bytes on, the 16-byte chunks are read where they lie
    assert schedule.memory(0, "shm", in_place_from=16) == schedule.memory(0, "shm", True)
    assert schedule.memory(0, "shm", in_place_from=17) == schedule.memory(0, "shm")
