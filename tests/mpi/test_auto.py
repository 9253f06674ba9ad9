"""auto under real ranks: every rank runs the same algorithm even when their local
calibrations disagree (rank 0's parameters win), so auto can never split the job."""
import numpy as np

import collectives as C
from topology import auto, calibrate


def test_ranks_with_different_calibrations_agree(comm, monkeypatch):
    if comm.rank == 1:     # rank 1 believes in huge latency: alone it would pick differently
        monkeypatch.setattr(calibrate, "load_parameters", lambda: {
            "alpha": 1.0, "beta": 1e6, "gamma": 0.0, "calibrated": True, "path": "-"})
    auto._parameters.clear()
    x = np.full(50_001, comm.rank + 1.0)
    C.allreduce(x, algorithm="auto")
    assert (x == comm.size * (comm.size + 1) / 2).all()
    names = sorted(C.ALGORITHMS)
    mine = np.array([names.index(auto.last_choice["algorithm"])], np.int64)
    low, high = mine.copy(), mine.copy()
    C.allreduce(low, op="min")
    C.allreduce(high, op="max")
    assert low[0] == high[0], "ranks ran different algorithms under auto"
    auto._parameters.clear()
