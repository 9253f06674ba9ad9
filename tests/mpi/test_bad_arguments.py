"""Every argument the public collectives take is checked before anything is exchanged, so a
bad one on any rank gives every rank a clear error (its own, or the metadata check naming
that rank), never a raw TypeError on one rank while its peers wait out the deadline. With
check=False, what can still go wrong names the ranks involved."""
import numpy as np
import pytest

import collectives as C
from collectives import watchdog


def _still_works(comm):
    x = np.full(7, comm.rank + 1.0)
    C.allreduce(x, comm=comm)
    assert (x == comm.size * (comm.size + 1) / 2).all()


def _last(comm) -> int:
    return comm.size - 1


@pytest.mark.parametrize("bad,shown", [("0", "'0' (str)"), (True, "True (bool)"),
                                       (1.0, "1.0 (float)"), (None, "None (NoneType)")])
def test_root_of_the_wrong_type_on_one_rank_fails_everywhere(comm, bad, shown):
    last = _last(comm)
    root = bad if comm.rank == last else 0
    if comm.rank == last:
        with pytest.raises(C.InputError, match=rf"root must be an integer rank, got "
                                               rf"{shown.replace('(', '[(]').replace(')', '[)]')}"):
            C.broadcast(np.zeros(5), root=root)
    else:
        with pytest.raises(C.MismatchError, match=rf"rank {last}: root not an integer"):
            C.broadcast(np.zeros(5), root=root)
    _still_works(comm)


def test_numpy_integer_root_is_a_root(comm):
    x = np.full(5, float(comm.rank))
    C.broadcast(x, root=np.int64(_last(comm)))
    assert (x == _last(comm)).all()


@pytest.mark.parametrize("collective", ["allreduce", "reduce_scatter", "reduce"])
def test_reducing_without_an_op_is_refused(comm, collective):
    with pytest.raises(C.InputError, match=rf"{collective} needs a reduce op .* got None"):
        getattr(C, collective)(np.zeros(comm.size * 2), op=None)
    _still_works(comm)


def test_op_none_on_one_rank_is_named_by_the_others(comm):
    last = _last(comm)
    if comm.rank == last:
        with pytest.raises(C.InputError, match="needs a reduce op"):
            C.allreduce(np.zeros(4), op=None)
    else:
        with pytest.raises(C.MismatchError, match=rf"rank {last}: no op given"):
            C.allreduce(np.zeros(4), op="sum")
    _still_works(comm)


@pytest.mark.parametrize("segment_bytes", ["4096", 0, -8, True, 2.5])
def test_bad_segment_size_is_refused(comm, segment_bytes):
    with pytest.raises(C.InputError, match=rf"segment_bytes must be an integer >= 1, got "
                                           rf"{segment_bytes!r}".replace(".", r"\.")):
        C.allreduce(np.zeros(4), segment_bytes=segment_bytes)
    _still_works(comm)


@pytest.mark.parametrize("algorithm", [5, None, ["ring"]])
def test_algorithm_that_is_not_a_name_is_refused(comm, algorithm):
    with pytest.raises(C.InputError, match=r"unknown allreduce algorithm"):
        C.allreduce(np.zeros(4), algorithm=algorithm)
    _still_works(comm)


@pytest.mark.parametrize("bad_comm", ["world", 3, object()])
def test_comm_that_is_not_a_communicator_is_refused_at_once(comm, bad_comm):
    with pytest.raises(TypeError, match=r"comm must be a ringps Communicator"):
        C.allreduce(np.zeros(4), comm=bad_comm)
    _still_works(comm)


def test_check_off_mismatched_lengths_name_a_rank_and_never_return_wrong_data(comm):
    """check=False skips the metadata exchange; a length mismatch must still end in an error
    naming a peer on the ranks it reaches (a message that does not fit, or a wait that runs
    out), never in a silent result."""
    if comm.size < 2:
        pytest.skip("needs 2 ranks")
    fresh = C.Communicator(comm.mpi, timeout=2.0)
    count = 1000 + (17 if comm.rank == 0 else 0)
    x = np.full(count, 1.0, np.float32)
    try:
        C.allreduce(x, algorithm="ring", comm=fresh, check=False)
        outcome = None
    except (C.MismatchError, C.PeerTimeout) as exc:
        outcome = str(exc)
    finally:
        watchdog._state["failures"].clear()    # handled here: no exit guard for it
    others = [r for r in range(comm.size) if r != comm.rank]
    if outcome is not None:
        assert any(f"rank {r}" in outcome for r in others), outcome
    else:   # a rank the mismatch never reached must have the right sum
        assert (x == comm.size).all(), x[:5]
    seen = comm.mpi.allgather(outcome is not None)
    assert any(seen), "no rank noticed the mismatched lengths"
    _still_works(comm)
