"""auto under real ranks: every rank runs the same algorithm even when their local
calibrations pick differently (rank 0's parameters win), so auto can never split the job."""
import numpy as np

import collectives as C
from topology import auto

# alpha, beta, gamma, overhead, calibrated. Messages dear and bytes cheap: on 2+ ranks the
# fewest messages win (oneshot: alpha + 2(n-1)o; root and host: 2(alpha + (n-1)o); blocked's
# 2(alpha + 2(n-1)o))
MESSAGES_DEAR = (1.0, 1e15, 0.0, 1.0, True)
# bytes and reductions dear, messages free: root's 2(n-1)S/B loses to the 2(n-1)/n S/B of
# the others, and oneshot's (n-1)S of reduction per rank to their (n-1)/n S (on 2 ranks
# oneshot ties them on bytes, so it is the reduction that decides)
BYTES_DEAR = (0.0, 1e3, 1e-3, 0.0, True)


def test_ranks_with_different_calibrations_agree(comm, monkeypatch):
    count = 50_001
    nbytes = count * 8
    mine = BYTES_DEAR if comm.rank == 0 else MESSAGES_DEAR
    monkeypatch.setattr(auto, "stored_parameters", lambda: mine)
    if comm.size > 1:       # the premise: alone, rank 0 and the others would pick differently
        few_messages = ("root", "host", "oneshot")     # oneshot: one step, alpha once
        assert auto.choose(comm.size, nbytes, BYTES_DEAR, 8)[0] not in few_messages
        assert auto.choose(comm.size, nbytes, MESSAGES_DEAR, 8)[0] in few_messages
    auto._parameters.clear()
    x = np.full(count, comm.rank + 1.0)
    C.allreduce(x, algorithm="auto")
    assert (x == comm.size * (comm.size + 1) / 2).all()
    assert auto.last_choice["algorithm"] == auto.choose(comm.size, nbytes, BYTES_DEAR, 8)[0]
    names = sorted(C.ALGORITHMS)
    picked = np.array([names.index(auto.last_choice["algorithm"])], np.int64)
    low, high = picked.copy(), picked.copy()
    C.allreduce(low, op="min")
    C.allreduce(high, op="max")
    assert low[0] == high[0], "ranks ran different algorithms under auto"
    auto._parameters.clear()


def test_reasons_logged_once_per_size_class_on_rank_zero(comm, monkeypatch, caplog):
    import logging
    from collectives import torch_backend
    monkeypatch.setenv("RINGPS_DEBUG", "info")
    log = logging.getLogger("ringps.auto")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "level", log.level)
    torch_backend._show_auto_choices()
    assert log.level == logging.INFO and log.handlers
    monkeypatch.setattr(auto, "stored_parameters", lambda: BYTES_DEAR)
    auto._parameters.clear()
    auto._logged.clear()
    with caplog.at_level(logging.INFO, logger="ringps.auto"):
        for count in (3000, 3100, 3900, 5000):        # 12000..15600 bytes: 16K; 20000: 32K
            C.allreduce(np.ones(count, np.float32), algorithm="auto")
    said = [r.getMessage() for r in caplog.records if r.name == "ringps.auto"]
    if comm.rank == 0:
        assert len(said) == 2 and "up to 16384 bytes" in said[0] and "up to 32768" in said[1]
        assert all("predicted fastest" in line for line in said)
    else:
        assert said == []
    auto._parameters.clear()


def test_board_is_priced_only_where_the_transport_has_one(comm, monkeypatch):
    """Rank 0's parameters carry a board post of 3 us; a transport without a board (MPI, or
    ranks on several nodes) leaves it out, so oneshot is priced as its schedule there. With
    one, a small auto call, after the first, runs on the board (one post per call)."""
    from collectives.comm import Communicator
    from collectives.transport import board
    monkeypatch.setattr(auto, "stored_parameters",
                        lambda: (1e-5, 1e30, 0.0, 1e-5, True, 0, 1.0, 3e-6))
    auto._parameters.clear()
    plain = Communicator(comm.mpi, transport="mpi")
    assert auto.board_term(auto._agreed_parameters(plain.transport)) is None
    if comm.size > 1 and board.PROBLEM is None:
        shm = Communicator(comm.mpi, transport="shm")
        assert auto.board_term(auto._agreed_parameters(shm.transport)) == 3e-6
        x = np.ones(5, np.float32)
        C.allreduce(x, algorithm="auto", comm=shm)
        seq = shm.transport.board.seq
        C.allreduce(x, algorithm="auto", comm=shm)
        assert shm.transport.board.seq == seq + 1 and auto.last_choice["algorithm"] == "oneshot"
        assert (x == comm.size ** 2).all()
    auto._parameters.clear()
