"""`python -m bench` as a user runs it: bad input ends in one line and a non-zero exit on
every rank, and real runs leave rows, CSV, JSON, plots and a report."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import collectives as C
from mpirun import ROOT, run
from topology.auto import candidates


def bench(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args,message", [
    (["allreduce", "--algo", "tree"], "bench: error: unknown allreduce algorithm 'tree'"),
    (["allreduce", "-b", "64M", "-e", "1K"], "bench: error: size range reversed"),
    (["allreduce", "--dtype", "complex64"], "bench: error: unsupported dtype 'complex64'"),
    (["allreduce", "-b", "12Q"], "bench: error: argument -b/--minbytes: cannot read size"),
    (["allreduce", "--op", "avg", "--dtype", "int32"], "bench: error: op 'avg' is not defined"),
    (["nonsense"], "bench: error: argument command: invalid choice"),
    (["allreduce", "--algo", "ps"], "bench: error: ps run through parameter-server ranks"),
    (["allreduce", "--servers", "0"], "bench: error: --servers must be >= 1"),
    (["allreduce", "--algo", "blocked", "--rings", "bidirectional"],
     "bench: error: --rings measures `ring` over a ring layout: add ring to --algo"),
    (["allreduce", "--algo", "ring", "--rings", "bidirectional", "-e", "1K"],
     "bench: error: --rings: bad ring layout (ranks 0, 1: rings 1 and 2 both send from rank 1"),
] + ([] if importlib.util.find_spec("cupy") else                      # a GPU machine has it
      [(["allreduce", "--device", "cuda"], "bench: error: --device cuda needs CuPy")]))
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = bench(*args, "--np", "2", "--out", str(tmp_path / "results"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()          # no empty results folder left behind


@pytest.mark.parametrize("command", ["suite", "d2l"])
def test_one_rank_has_nothing_to_compare(command, tmp_path):
    result = bench(command, "--np", "1", "--out", str(tmp_path))
    assert result.returncode == 2 and not list(tmp_path.iterdir())
    assert result.stderr.strip() == f"bench: error: {command} --np 1: one rank has nothing to " \
        "compare: every strategy is a copy, and bandwidths divide by zero time; start 2 or " \
        "more (e.g. --np 4, make bench NP=4)"
    rc, out = run(1, ["-m", "bench", command, "--out", str(tmp_path)], timeout=60)
    assert rc == 2 and f"bench: error: {command} on 1 rank: one rank has nothing" in out
    assert not list(tmp_path.iterdir())


def test_bad_input_under_mpiexec_fails_every_rank():
    rc, out = run(2, ["-m", "bench", "allreduce", "--algo", "tree"], timeout=60)
    assert rc not in (None, 0) and out.count("bench: error: unknown allreduce algorithm") == 1, out
    assert "Traceback" not in out


def test_without_mpiexec_it_says_how_to_start():
    result = bench("allreduce")
    assert result.returncode == 2
    assert "mpiexec -n 4 python -m bench allreduce" in result.stderr and "--np" in result.stderr


def test_sweep_json_rows_and_results_folder(tmp_path):
    result = bench("allreduce", "--np", "2", "-b", "1K", "-e", "16K", "-f", "4", "--iters", "2",
                   "--json", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"collective", "algo", "dtype", "ranks", "bytes", "time_us", "algbw", "busbw",
            "wrong"} <= set(rows[0])
    assert {r["algo"] for r in rows} == {"mpi", "gloo", *C.flat_algorithms()} >= {"rhd", "auto"}
    assert {r.get("chosen") for r in rows if r["algo"] == "auto"} <= set(candidates())
    assert all(r["wrong"] == 0 and r["ranks"] == 2 for r in rows)
    assert sorted({r["bytes"] for r in rows}) == [1024, 4096, 16384]
    (folder,) = tmp_path.iterdir()
    assert {p.name for p in folder.iterdir()} >= {"allreduce.csv", "results.json",
                                                  "allreduce_busbw.png"}
    env = json.loads((folder / "results.json").read_text())["environment"]
    assert env["ranks"] == 2 and env["mpi_library"].startswith("MPICH")


def test_transports_measured_side_by_side(tmp_path):
    result = bench("allreduce", "--np", "3", "-b", "4K", "-e", "64K", "-f", "16", "--iters", "2",
                   "--algo", "ring,oneshot", "--transport", "mpi,shm", "--no-gloo", "--json",
                   "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["algo"] for r in rows} == {"mpi", "ring/mpi", "ring/shm", "oneshot/mpi",
                                         "oneshot/shm"}
    assert all(r["wrong"] == 0 for r in rows)
    assert all(0 < r["roofline"] for r in rows if r["algo"] != "mpi")
    bad = bench("allreduce", "--np", "2", "--transport", "mpi,nvlink")
    assert bad.returncode == 2 and "unknown transport 'nvlink'" in bad.stderr


def test_suite_writes_report_with_plots(tmp_path):
    stored = tmp_path / "local.json"
    result = bench("suite", "--np", "2", "-b", "1K", "-e", "4K", "--d2l-size", "64K",
                   "--scaling-size", "64K", "--iters", "2", "-q", "--out", str(tmp_path / "r"),
                   env={"RINGPS_LOCAL_TOPOLOGY": str(stored)})
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "r").iterdir()
    report = (folder / "REPORT.md").read_text()
    for image in ("allreduce_busbw.png", "d2l.png", "scaling.png", "calibration.png"):
        assert f"]({image})" in report and (folder / image).stat().st_size > 1000
    assert "GPU0" in report and "| ring |" in report and "median error" in report
    assert f"stored in {stored}" in report and "| 2 | 1K |" in report     # agreement cells
    assert "auto against the measurements" in report and "predicted fastest" in report
    fitted = json.loads(stored.read_text())
    assert fitted["beta"] > 0 and "overhead" in fitted and fitted["errors"]["ring"]["< 64K"]
    assert (folder / "calibration.csv").exists() and (folder / "local.json").exists()
    elsewhere = tmp_path / "mine.json"
    again = bench("calibrate", str(folder), "--out", str(elsewhere),
                  env={"RINGPS_LOCAL_TOPOLOGY": str(stored)})
    assert again.returncode == 0 and "median error" in again.stdout, again.stderr
    assert f"stored in {elsewhere} (auto and the local preset read it with " \
        f"RINGPS_LOCAL_TOPOLOGY={elsewhere})" in again.stdout
    assert json.loads(elsewhere.read_text())["points"] == fitted["points"]
    assert "auto against the measurements" in again.stdout and "| 2 | 1K |" in report
    assert "memory_bandwidth" in fitted and "board" in fitted


def test_ddp_step_under_every_algorithm_and_gloo(tmp_path):
    result = bench("ddp", "--np", "2", "--width", "64", "--iters", "2", "--warmup", "1",
                   "--json", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = {r["algo"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == {*C.flat_algorithms(), "gloo", "none"}     # none: the no-comm floor
    assert all(r["step_ms"] > 0 and r["ranks"] == 2 for r in rows.values())
    assert rows["gloo"]["ratio_to_gloo"] == 1.0
    (folder,) = tmp_path.iterdir()
    assert "step_ms" in (folder / "ddp.csv").read_text().splitlines()[0]
