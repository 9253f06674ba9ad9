"""`python -m bench ps-load` (bench/ps_load.py): a short real run loses nothing and reports
sane figures; the audit that counts lost updates does count them when a store drops,
doubles or tears a push; bad options end in one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import ps_load
from mpirun import ROOT, run


def test_short_run_loses_nothing_and_reports_latency_and_throughput(tmp_path):
    args = ["-m", "bench", "ps-load", "--seconds", "3", "--workers", "3", "--servers", "1",
            "--out", str(tmp_path)]
    rc, out = run(4, args, timeout=240)
    assert rc is not None, f"bench ps-load hung (killed after 240 s):\n{out[-4000:]}"
    assert rc == 0, f"bench ps-load failed (rc={rc}):\n{out[-4000:]}"
    folder, = tmp_path.glob("*-ps-load")
    result = json.loads((folder / "results.json").read_text())
    assert (folder / "ps_load.csv").read_text().startswith("op,count,p50_us,p99_us")
    assert result["workers"] == 3 and result["servers"] == 1 and result["ok"]
    for name in ("lost", "duplicated", "torn", "misattributed", "versions", "stale", "errors"):
        assert result[name] == 0, (name, result[name], result["first_errors"])
    assert len(result["pushes_per_worker"]) == 3 and min(result["pushes_per_worker"]) > 0
    assert 3 <= result["seconds"] < 30, result["seconds"]
    rows = {row["op"]: row for row in result["rows"]}
    assert rows["all"]["count"] == rows["push"]["count"] + rows["pull"]["count"]
    assert rows["push"]["count"] == sum(result["pushes_per_worker"])
    for row in rows.values():
        assert 0 < row["p50_us"] <= row["p99_us"] <= row["max_us"] < 60e6, row
        assert row["ops_per_s"] > 0 and row["MB_per_s"] > 0, row
    applied = sum(key["applied_min"] for key in result["per_key"])
    assert applied == sum(result["pushes_per_worker"]), result["per_key"]
    assert "lost 0, duplicated 0, torn 0" in out, out[-3000:]


class StoreThatMisbehaves:
    """A stand-in for the KV store at audit time: holds what each worker pushed, applied
    faithfully unless told to drop, double or tear a push."""

    def __init__(self, keys: int, pushes: np.ndarray, fault: str | None = None):
        self.values, self.versions = {}, {}
        for i in range(keys):
            value = sum(n * ps_load.increment(ps_load.key_elements(i), w)
                        for w, n in enumerate(pushes[:, i]))
            value = np.asarray(value, np.int64)
            version = int(pushes[:, i].sum())
            if i == 1 and fault == "drop":
                value = value - ps_load.increment(value.size, 0)
                version -= 1
            if i == 1 and fault == "double":
                value = value + ps_load.increment(value.size, 0)
                version += 1
            if i == 1 and fault == "tear":                 # one push missing from the second half
                half = value.size // 2
                value[half:] -= ps_load.increment(value.size, 0)[half:]
            if i == 1 and fault == "version":
                version += 1
            if i == 1 and fault == "misattribute":         # worker 0's push as worker 1's
                value[1::2] += 1
            self.values[ps_load.key_name(i)] = value
            self.versions[ps_load.key_name(i)] = version

    def pull(self, key, out):
        out[:] = self.values[key]
        return out

    def wait(self, handle):
        return handle

    def version(self, key):
        return self.versions[key]


@pytest.mark.parametrize("fault,counted", [
    (None, {}), ("drop", {"lost": 1, "versions": 1}), ("double", {"duplicated": 1, "versions": 1}),
    ("tear", {"lost": 1, "torn": 1}), ("version", {"versions": 1}),
    ("misattribute", {"misattributed": 1})])
def test_audit_counts_what_a_store_loses(fault, counted):
    pushes = np.array([[3, 5, 0, 2], [1, 4, 7, 0], [0, 2, 2, 2]])       # worker x key
    totals = ps_load.audit(StoreThatMisbehaves(4, pushes, fault), 4, pushes)["totals"]
    for name in ("lost", "duplicated", "versions", "misattributed"):
        assert totals[name] == counted.get(name, 0), (name, totals)
    assert (totals["torn"] > 0) == ("torn" in counted), totals


@pytest.mark.parametrize("args,message", [
    (["--seconds", "0"], "bench: error: --seconds must be > 0"),
    (["--servers", "0"], "bench: error: --servers must be >= 1"),
    (["--workers", "3", "--np", "6"], "bench: error: --np 6 does not match --workers 3"),
])
def test_bad_options_are_one_line_and_exit_2(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "ps-load", *args, "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "RINGPS_UNDER_MPIEXEC": ""})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(message), result.stderr
