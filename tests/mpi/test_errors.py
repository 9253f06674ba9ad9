"""Bad input and mismatched calls: a clear error on every rank, before any data moves, and the
communicator still works afterwards."""
import numpy as np
import pytest

import collectives as C

ALGORITHMS = C.flat_algorithms()


def _still_works(comm):
    x = np.full(7, comm.rank + 1.0)
    C.allreduce(x)
    assert (x == comm.size * (comm.size + 1) / 2).all()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_non_contiguous_buffer(comm, algorithm):
    x = np.zeros(20, np.float32)[::2]
    with pytest.raises(ValueError, match="non-contiguous array"):
        C.allreduce(x, algorithm=algorithm)
    _still_works(comm)


@pytest.mark.parametrize("bad", [np.zeros(4, np.complex64), np.zeros(4, np.int16),
                                 np.zeros(4, bool)])
def test_unsupported_dtype(comm, bad):
    with pytest.raises(TypeError, match=f"dtype {bad.dtype.name} is not supported"):
        C.allreduce(bad)
    _still_works(comm)


def test_unknown_op_algorithm_and_root(comm):
    with pytest.raises(ValueError, match="unknown reduce op 'median'"):
        C.allreduce(np.zeros(3), op="median")
    with pytest.raises(ValueError, match="unknown allreduce algorithm 'tree'"):
        C.allreduce(np.zeros(3), algorithm="tree")
    with pytest.raises(ValueError, match="unknown broadcast algorithm 'blocked'"):
        C.broadcast(np.zeros(3), algorithm="blocked")
    with pytest.raises(ValueError, match=f"root {comm.size} is out of range"):
        C.broadcast(np.zeros(3), root=comm.size)
    _still_works(comm)


def test_op_invalid_for_dtype(comm):
    with pytest.raises(TypeError, match="op 'avg' is not defined for integer dtype int32"):
        C.allreduce(np.zeros(3, np.int32), op="avg")


def test_read_only_and_foreign_buffers(comm):
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        C.allreduce(ro)
    with pytest.raises(TypeError, match="buffer of type list is not supported"):
        C.allreduce([1.0, 2.0])


def test_check_off_still_rejects_local_input(comm):
    with pytest.raises(ValueError, match="non-contiguous"):
        C.allreduce(np.zeros(8)[::2], check=False)


def test_length_mismatch_names_ranks_and_values(comm):
    if comm.size < 2:
        pytest.skip("needs 2 ranks")
    count = 10 if comm.rank != 1 else 12
    with pytest.raises(C.MismatchError) as info:
        C.allreduce(np.zeros(count, np.float32), algorithm="ring")
    text = str(info.value)
    assert "ranks disagree on length" in text and "12 on rank 1" in text, text
    assert "no data was moved" in text
    _still_works(comm)


@pytest.mark.parametrize("field,kwargs_of_rank", [
    ("dtype", lambda r: {"buf": np.zeros(5, np.float64 if r == 1 else np.float32)}),
    ("op", lambda r: {"buf": np.zeros(5), "op": "max" if r == 1 else "sum"}),
    ("algorithm", lambda r: {"buf": np.zeros(5), "algorithm": "blocked" if r == 1 else "ring"}),
])
def test_dtype_op_algorithm_mismatch(comm, field, kwargs_of_rank):
    if comm.size < 2:
        pytest.skip("needs 2 ranks")
    with pytest.raises(C.MismatchError, match=f"ranks disagree on {field}: .* on rank 1"):
        C.allreduce(**kwargs_of_rank(comm.rank))
    _still_works(comm)


def test_root_mismatch(comm):
    if comm.size < 2:
        pytest.skip("needs 2 ranks")
    with pytest.raises(C.MismatchError, match="ranks disagree on root"):
        C.broadcast(np.zeros(4), root=1 if comm.rank == 1 else 0)
    _still_works(comm)


def test_one_rank_with_bad_input_stops_every_rank(comm):
    """The bad rank names its own problem; the others name the bad rank, nobody hangs."""
    if comm.size < 2:
        pytest.skip("needs 2 ranks")
    x = np.zeros(16, np.float32)
    if comm.rank == 1:
        with pytest.raises(ValueError, match="non-contiguous array"):
            C.allreduce(x[::2])
    else:
        with pytest.raises(C.MismatchError, match="rank 1: non-contiguous buffer"):
            C.allreduce(x[:8])
    _still_works(comm)


def test_byte_swapped_array_rejected(comm):
    x = np.full(4, comm.rank + 1.0, dtype=">f8" if np.little_endian else "<f8")
    with pytest.raises(ValueError, match="byte-swapped dtype"):
        C.allreduce(x)
    _still_works(comm)


def test_segment_size_mismatch(comm):
    """Ends of a link that cut chunks differently would match the wrong messages."""
    if comm.size < 2:
        pytest.skip("needs 2 ranks")
    with pytest.raises(C.MismatchError, match="ranks disagree on segment_bytes: .*64 on rank 1"):
        C.allreduce(np.zeros(1000), segment_bytes=64 if comm.rank == 1 else 1 << 20)
    with pytest.raises(ValueError, match="segment_bytes must be an integer >= 1, got 0"):
        C.allreduce(np.zeros(10), segment_bytes=0)
    _still_works(comm)
