"""topology/: presets, files, both evaluators, and the d2l table from first principles."""
import json
import subprocess
import sys
import textwrap
import tomllib

import numpy as np
import pytest

from mpirun import ROOT, run
from topology import fileformat
from topology.cost import modelled_algorithms, predict
from topology.model import Link, Topology, TopologyError
from topology.presets import PRESETS, preset

MB160 = 160 * 10 ** 6


@pytest.mark.parametrize("evaluator", ["closed-form", "simulate"])
@pytest.mark.parametrize("algo,d2l_ms", [("root", 60), ("host", 80), ("blocked", 15)])
def test_d2l_4gpu_pcie_table_from_first_principles(evaluator, algo, d2l_ms):
    seconds = predict(preset("d2l-4gpu-pcie"), algo, MB160, evaluator=evaluator)
    assert seconds * 1e3 == pytest.approx(d2l_ms, rel=0.05)


@pytest.mark.parametrize("evaluator", ["closed-form", "simulate"])
def test_dgx1_ring_runs_both_nvlink_rings_at_once(evaluator):
    """d2l's DGX-1 declares its two rings (double and single NVLinks) as its ring layout, so
    `ring` splits the buffer 2:1 across them: each GPU sends 2(n-1)/n * S over 3 x 18 GB/s,
    plus per step one link latency and the overheads of 2 sends and 2 messages taken per GPU
    (one of each per ring). The plain ring in rank order rides the double links alone
    (36 GB/s), one send and one message taken per step."""
    t = preset("dgx1-v100")
    alpha, o = 1e-6, t.overhead
    both = predict(t, "ring", MB160, evaluator=evaluator)
    plain = predict(t, "ring", MB160, evaluator=evaluator, rings="rank-order")
    if evaluator == "closed-form":
        assert both == pytest.approx(2 * 7 / 8 * MB160 / 54e9 + 14 * (alpha + 4 * o), rel=1e-4)
        assert plain == pytest.approx(2 * 7 / 8 * MB160 / 36e9 + 14 * (alpha + 2 * o), rel=1e-4)
    else:     # the simulator posts the second send while the first is on the wire: o less
        assert both == pytest.approx(2 * 7 / 8 * MB160 / 54e9 + 14 * (alpha + 3 * o), rel=1e-4)
        assert plain == pytest.approx(2 * 7 / 8 * MB160 / 36e9 + 14 * (alpha + 2 * o), rel=1e-4)
    # d2l's 2 * 160 MB / (3 * 18 GB/s) = 5.93 ms leaves out the ring's (n-1)/n = 7/8
    d2l_formula = 2 * MB160 / (3 * 18e9)
    assert both == pytest.approx(d2l_formula * 7 / 8, rel=0.05)
    assert predict(t, "ring", MB160, ranks=4, evaluator=evaluator) == \
        pytest.approx(predict(t, "ring", MB160, ranks=4, evaluator=evaluator, rings=None))


def test_bench_model_prints_the_ring_beside_d2l_with_the_factor_it_drops():
    out = subprocess.run([sys.executable, "-m", "bench", "model", "--preset", "dgx1-v100",
                          "--algo", "ring"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "ring(rank order)" in out and "7/8 of that: 5.19 ms" in out
    rows = subprocess.run([sys.executable, "-m", "bench", "model", "--preset", "dgx1-v100",
                           "--algo", "ring", "--rings", "bidirectional", "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    rows = {r["algo"]: r for r in map(json.loads, rows.splitlines())}
    assert rows["ring"]["rings"] == "bidirectional" and rows["ring"]["d2l_seconds"] is None
    assert rows["ring"]["seconds"] < rows["ring(rank order)"]["seconds"]


def test_incast_and_extra_endpoint_come_from_the_links():
    """GPU0 and CPU differ only by the aggregator's own gradient crossing the switch."""
    t = preset("d2l-4gpu-pcie")
    for n in (2, 3, 4):
        root = predict(t, "root", MB160, ranks=n)
        host = predict(t, "host", MB160, ranks=n)
        assert root == pytest.approx(2 * (n - 1) * MB160 / 16e9, rel=1e-3)
        assert host == pytest.approx(2 * n * MB160 / 16e9, rel=1e-3)


def _two_paths():
    """a and b send to c; b's path has a slow second hop that a's does not share."""
    endpoints = {x: {"kind": "gpu", "node": 0} for x in "abc"}
    links = [Link("a", "s", 10.0), Link("b", "t", 10.0), Link("t", "s", 1.0), Link("s", "c", 10.0)]
    return Topology("two-paths", endpoints, ["s", "t"], links, ["a", "b", "c"])


def test_simulator_shares_links_max_min_fairly():
    from collectives.schedule import Schedule, Transfer
    from topology.model import closed_form
    from topology.simulate import simulate
    t = _two_paths()
    schedule = Schedule([[Transfer(0, 2, 10), Transfer(1, 2, 2)]])
    # b is held to 1 B/s by t->s, so a gets the other 9 of s->c: a ends at 10/9 s... and
    # keeps going at 9 B/s until b's 2 bytes take 2 s; the bound says max(12/10, 2/1) = 2 s
    assert simulate(t, schedule, 3) == pytest.approx(2.0)
    assert closed_form(t, schedule, 3) == pytest.approx(2.0)
    schedule = Schedule([[Transfer(0, 2, 30), Transfer(1, 2, 2)]])
    # a: 9 B/s for 2 s (18 B), then 10 B/s for the last 12 B -> 3.2 s; bound 32/10 = 3.2
    assert simulate(t, schedule, 3) == pytest.approx(3.2)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_prices_every_algorithm(name):
    """The simulator overlaps an endpoint's message overheads with bytes on the wire, where
    the closed form adds them up: they agree within 15% at 1 MB."""
    t = preset(name, nodes=1 if name == "local" else 2)
    for algo in modelled_algorithms():
        closed = predict(t, algo, 10 ** 6)
        simulated = predict(t, algo, 10 ** 6, evaluator="simulate")
        assert closed > 0 and simulated == pytest.approx(closed, rel=0.15), algo


def test_toml_format_in_the_docstring_loads():
    doc = fileformat.__doc__
    block = textwrap.dedent(doc[doc.index("    name ="):doc.index("Bandwidth is")])
    t = fileformat.from_dict(tomllib.loads(block))
    # per step: 2 us of path latency, the host endpoint takes (or posts) 2 messages of 1 us
    assert t.ranks == ["gpu0", "gpu1"] and predict(t, "host", 16_000_000, 2) == \
        pytest.approx(2 * (2 * 16e6 / 16e9 + 2e-6 + 2 * 1e-6), rel=1e-6)


def test_json_round_trip_predicts_the_same(tmp_path):
    t = preset("dgx1-v100")
    fileformat.save(t, tmp_path / "dgx1.json")
    again = fileformat.load(tmp_path / "dgx1.json")
    assert again.rings == t.rings and again.rings.count(",") == 1
    for algo in modelled_algorithms():
        assert predict(again, algo, MB160) == pytest.approx(predict(t, algo, MB160))


def test_bad_topologies_are_named():
    data = fileformat.to_dict(preset("d2l-4gpu-pcie"))
    data["links"] = [link for link in data["links"] if link["a"] != "n0.gpu3"]
    with pytest.raises(TopologyError, match="no path from n0.gpu3 to n0.gpu0"):
        fileformat.from_dict(data)
    data["links"].append({"a": "n0.gpu9", "b": "n0.pcie", "bandwidth": 1e9})
    with pytest.raises(TopologyError, match="names 'n0.gpu9'"):
        fileformat.from_dict(data)
    with pytest.raises(TopologyError, match="unknown preset 'dgx-9'"):
        preset("dgx-9")
    with pytest.raises(TopologyError, match="nodes must be a whole number"):
        preset("dgx-h100", nodes=0)
    with pytest.raises(TopologyError, match="cannot model 9"):
        predict(preset("d2l-4gpu-pcie"), "ring", 100, ranks=9)
    data = fileformat.to_dict(preset("d2l-4gpu-pcie"))
    data["rings"] = "0-1-2-3,0-1-3-2"
    with pytest.raises(TopologyError, match="rings: rings 1 and 2 both send from rank 0"):
        fileformat.from_dict(data)


def test_bench_model_cli_json():
    out = subprocess.run([sys.executable, "-m", "bench", "model", "--preset", "d2l-4gpu-pcie",
                          "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    rows = {r["algo"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert {"algo", "preset", "ranks", "bytes", "seconds"} <= set(rows["root"])
    assert rows["root"]["seconds"] == pytest.approx(0.060, rel=0.05)
    assert rows["root"]["d2l_seconds"] == 0.060 and rows["ring"]["d2l_seconds"] is None
    # the terms add up, and trace to root's table: 2 steps of a 2 us path (GPU-switch-GPU),
    # rank 0 taking 3 messages then posting 3 at 1 us each, 2 x 3 x 160 MB over 16 GB/s
    for row in rows.values():
        assert sum(row["terms"].values()) == pytest.approx(row["seconds"], rel=1e-9)
    assert rows["root"]["terms"] == pytest.approx({"latency": 4e-6, "overhead": 6e-6,
                                                   "bytes": 0.060, "reduce": 0.0}, rel=1e-9)
    bad = subprocess.run([sys.executable, "-m", "bench", "model", "--preset", "nope"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("bench: error: unknown preset")


def test_topology_show_on_cpu_only_ranks():
    rc, out = run(2, ["-m", "topology", "show", "--json"], timeout=60)
    assert rc == 0, out
    info = json.loads(out.strip().splitlines()[-1])
    assert info["ranks"] == 2 and info["nodes"][0]["ranks"] == [0, 1]
    assert info["gpus"]["count"] >= 0 and info["mpi_library"]


@pytest.mark.parametrize("cores,share", [(0, 1.0),     # every rank its own CPU
                                         (2, 1.0),     # 4 ranks share 2 cores ...
                                         (2, 0.7)])    # ... and get 70% of them
def test_calibration_recovers_known_parameters(cores, share):
    from topology import calibrate
    truth = (30e-6, 4e9, 0.3e-9, 5e-6)
    rows = []
    cases = [("allreduce", a) for a in ("root", "host", "blocked", "ring", "rhd")] + \
        [("broadcast", "direct"), ("allgather", "ring")]
    for collective, algo in cases:
        for ranks in (2, 3, 4):
            for nbytes in (4096, 1 << 20, 16 << 20):
                a, b, c, d = calibrate.coefficients(algo, ranks, nbytes, collective,
                                                    cores=cores, core_share=share)
                seconds = a * truth[0] + b / truth[1] + c * truth[2] + d * truth[3]
                rows.append({"collective": collective, "algo": algo, "ranks": ranks,
                             "bytes": nbytes, "time_us": seconds * 1e6})
    allreduce_only = calibrate.fit([r for r in rows if r["collective"] == "allreduce"], cores)
    assert allreduce_only.gamma == 0.0           # not identifiable without p2p-only rows
    fit = calibrate.fit(rows, cores)
    assert fit.cores == cores and fit.core_share == share
    assert fit.alpha == pytest.approx(truth[0], rel=1e-3)
    assert fit.beta == pytest.approx(truth[1], rel=1e-3)
    assert fit.gamma == pytest.approx(truth[2], rel=1e-3)
    assert fit.overhead == pytest.approx(truth[3], rel=1e-3)
    assert set(fit.errors["rhd"]) == {"< 64K", ">= 64K"}
    assert fit.errors["ring"]["< 64K"]["points"] == 3       # 4096 bytes on 2, 3, 4 ranks
    assert max(e["worst"] for bands in fit.errors.values() for e in bands.values()) < 1e-3


@pytest.mark.parametrize("algo,ranks,terms", [
    # (steps, bytes over the busiest link, bytes reduced at the busiest rank, messages at the
    # busiest rank), summed over steps, from each module's docstring table, S = 4096 bytes
    ("root", 4, (2, 2 * 3 * 4096, 3 * 4096, 2 * 3)),         # rank 0 takes 3, then posts 3
    ("blocked", 4, (2, 2 * 3 * 1024, 3 * 1024, 2 * 6)),       # 3 sends + 3 taken, per step
    ("ring", 4, (6, 6 * 1024, 3 * 1024, 6 * 2)),              # 1 send + 1 taken, per step
    ("rhd", 4, (4, 2 * (2048 + 1024), 2048 + 1024, 4 * 2)),   # halving 2048, 1024; doubling
    ("rhd", 3, (4, 2 * 4096 + 2 * 2048, 4096 + 2048, 1 + 2 + 2 + 1)),   # fold, 2, 2, unfold
])
def test_model_terms_trace_to_the_schedule(algo, ranks, terms):
    from topology import calibrate
    assert tuple(calibrate.coefficients(algo, ranks, 4096)) == pytest.approx(terms, rel=1e-9)


@pytest.mark.parametrize("algo,terms", [
    # 4 ranks sharing 2 cores, S = 4096: per step each term is at least the node's total
    # (all endpoints' messages, arrivals, reductions) over 2 cores (topology/model.py)
    ("root", (2, 2 * 3 * 4096, 3 * 4096, 2 * 3)),     # rank 0 alone: 3S in, total 3S < 2 x 3S
    ("host", (2, 2 * 4 * 4096, 4 * 4096, 2 * 4)),     # the host endpoint alone takes 4S, 4 msgs
    # every rank busy: 4 x (3 x 1024) arrive and are reduced in step 0, 4 x 6 messages per
    # step; over 2 cores that is 6144 bytes, 3072 reduced and 12 messages per step
    ("blocked", (2, 2 * 6144, 6144, 2 * 12)),
    ("ring", (6, 6 * 2048, 3 * 2048, 6 * 4)),         # 4 x 1024 in per step, 4 x 2 messages
    ("rhd", (4, 2 * (4096 + 2048), 4096 + 2048, 4 * 4)),     # 4 x 2048, then 4 x 1024
    ("oneshot", (1, 6 * 4096, 6 * 4096, 12)),         # 4 x 3S in and reduced, 4 x 6 messages
])
def test_more_ranks_than_cores_take_turns(algo, terms):
    from topology import calibrate
    assert tuple(calibrate.coefficients(algo, 4, 4096, cores=2)) == pytest.approx(terms, rel=1e-9)
    alone = calibrate.coefficients(algo, 4, 4096, cores=4)      # as many cores as ranks
    assert tuple(alone) == pytest.approx(tuple(calibrate.coefficients(algo, 4, 4096)), rel=1e-9)


def test_auto_on_shared_cores_prefers_one_busy_root():
    """Messages dear (alpha = o = 10 us, bytes and reductions free), 4 ranks. With a core
    each, oneshot's one step (alpha + 6o: 3 posted, 3 taken per rank) beats root's two
    (2 alpha + 6o: rank 0 takes 3, then posts 3): 70 us against 80. On 2 cores oneshot's
    4 x 6 messages take 12o, so 130 us, and root's 3 per step stay 3: root wins."""
    from topology import auto
    parameters = (1e-5, 1e30, 0.0, 1e-5, True)
    assert auto.choose(4, 1 << 20, parameters + (4,), itemsize=1)[0] == "oneshot"
    assert auto.choose(4, 1 << 20, parameters + (2,), itemsize=1)[0] == "root"
    for cores, oneshot in ((4, 7e-5), (2, 13e-5)):
        totals = {name: sum(parts.values()) for name, parts in
                  auto.predictions(4, 1 << 20, parameters + (cores,), 1).items()}
        assert totals["oneshot"] == pytest.approx(oneshot, rel=1e-9)
        assert totals["root"] == pytest.approx(8e-5, rel=1e-9)


def test_simulator_takes_turns_on_shared_cores():
    """oneshot with bytes only (beta 1 B/s, S = 1000): every flow shares its sender's and
    receiver's link three ways, so 3S = 3000 s with a core per rank; on 2 cores the 12S
    arriving at the node take 6S = 6000 s. root's step 0 (3S into rank 0) is 3000 s either way."""
    from topology import calibrate
    from topology.cost import schedule_for
    from topology.simulate import simulate
    for cores, expected in ((0, 3000.0), (4, 3000.0), (2, 6000.0)):
        t = calibrate.local_topology(4, 0.0, 1.0, 0.0, 0.0, cores)
        assert simulate(t, schedule_for("oneshot", 4, 1000, 1), 4) == pytest.approx(expected)
        assert simulate(t, schedule_for("root", 4, 1000, 1), 4) == pytest.approx(6000.0)


def test_misordered_counts_pairs_the_machine_ordered_and_the_model_did_not():
    """One cell: a 100, b 105, c 200 measured; the model says a 3, b 2, c 1. (a, c) and
    (b, c) are more than 10% apart and the model has them backwards: 2. (a, b) is within
    10%: not counted. A row of another cell (d) is never compared."""
    from topology.calibrate import misordered
    rows = [{"algo": n, "ranks": 4, "bytes": 1024} for n in "abc"] + \
        [{"algo": "d", "ranks": 4, "bytes": 4096}]
    assert misordered(rows, np.array([3.0, 2.0, 1.0, 0.0]),
                      np.array([100.0, 105.0, 200.0, 1.0])) == 2
    assert misordered(rows, np.array([1.0, 2.0, 3.0, 9.0]),
                      np.array([100.0, 105.0, 200.0, 1.0])) == 0


def test_calibration_refuses_too_little_data():
    from topology import calibrate
    with pytest.raises(TopologyError, match="at least 4 measured rows"):
        calibrate.fit([{"collective": "allreduce", "algo": "ring", "ranks": 1, "bytes": 8,
                        "time_us": 1.0}])


def test_local_preset_reads_the_stored_calibration(tmp_path, monkeypatch):
    from topology import calibrate
    monkeypatch.setenv("RINGPS_LOCAL_TOPOLOGY", str(tmp_path / "local.json"))
    assert "NOT calibrated" in preset("local").source
    calibrate.save(calibrate.Calibration(1e-5, 5e9, 0.0, 1e-6, {}, 3))
    t = preset("local", ranks=3)
    assert len(t.ranks) == 3 and "5.00 GB/s" in t.source and "1.00 us per message" in t.source
    # root on 3 ranks, 8 bytes: per step alpha + rank 0's 2 messages + 2 x 8 bytes over its link
    assert predict(t, "root", 8, 3) == pytest.approx(2 * (1e-5 + 2 * 1e-6 + 16 / 5e9),
                                                     rel=1e-9)


SLOW_MESSAGES = (1e-5, 1e9, 0.0, 5e-6, True)          # alpha, beta, gamma, overhead


@pytest.mark.parametrize("ranks,nbytes,parameters,expected", [
    # 8 bytes on 4: oneshot alpha + 6o = 40 us (one step: 3 sends and 3 receives at each
    # rank), root 2(alpha + 3o) = 50 us, host 2(alpha + 4o) = 60 us (its buffer takes rank 0's
    # copy too), blocked 2(alpha + 6o) = 80 us, rhd 4(alpha + 2o) = 80 us, ring
    # 6(alpha + 2o) = 120 us; bytes: oneshot's links 3 x 8, rank 0's link 2 x 3 x 8, the host
    # buffer's 2 x 4 x 8, the others' 2 x 3 x 2 (blocks of 2 bytes)
    (4, 8, SLOW_MESSAGES, {"oneshot": 40e-6 + 24e-9, "root": 50e-6 + 48e-9,
                           "host": 60e-6 + 64e-9, "blocked": 80e-6 + 12e-9,
                           "rhd": 80e-6 + 12e-9, "ring": 120e-6 + 12e-9}),
    # 256 MiB on 8: the same 2(7/8)S/B for blocked, ring and rhd; latency and overhead: rhd
    # 6(alpha + 2o) = 120 us, blocked 2(alpha + 14o) = 160 us, ring 14(alpha + 2o) = 280 us;
    # oneshot's one step (alpha + 14o = 80 us) moves 7S over every link
    (8, 1 << 28, SLOW_MESSAGES, {"rhd": 1.75 * (1 << 28) / 1e9 + 120e-6,
                                 "blocked": 1.75 * (1 << 28) / 1e9 + 160e-6,
                                 "ring": 1.75 * (1 << 28) / 1e9 + 280e-6,
                                 "oneshot": 7 * (1 << 28) / 1e9 + 80e-6}),
    # no overhead at all: blocked's 2 steps beat rhd's 6 and the ring's 14
    (8, 1 << 28, (1e-5, 1e9, 0.0, 0.0, False), {"blocked": 1.75 * (1 << 28) / 1e9 + 20e-6,
                                                "rhd": 1.75 * (1 << 28) / 1e9 + 60e-6}),
])
def test_auto_picks_what_the_formulas_say(ranks, nbytes, parameters, expected):
    from topology import auto
    name, reason = auto.choose(ranks, nbytes, parameters, itemsize=1)
    assert name == min(expected, key=lambda n: (expected[n], n))
    totals = {n: sum(parts.values()) for n, parts in
              auto.predictions(ranks, nbytes, parameters, itemsize=1).items()}
    for algo, seconds in expected.items():
        assert totals[algo] == pytest.approx(seconds, rel=1e-6), algo
    assert reason.startswith(f"{name} {expected[name] * 1e3:.3g} ms (")
    assert "predicted fastest" in reason and all(n in reason for n in totals)
    assert "auto" not in auto.candidates() and {"ring", "rhd"} <= set(auto.candidates())


@pytest.mark.parametrize("ranks,nbytes,itemsize,cores,share,terms", [
    # oneshot on the board: no alpha, no overhead, one post; bytes and reduce from the
    # schedule: (n-1)S over each rank's link, (n-1)S reduced per rank
    (4, 4096, 4, 0, 1.0, (0, 3 * 4096, 3 * 4096, 0, 1)),
    (2, 256 << 10, 8, 0, 1.0, (0, 256 << 10, 256 << 10, 0, 1)),     # the largest post
    # 4 ranks on 2 cores getting 80% of them: 4 x 3S arrive and are reduced over 1.6 cores,
    # and each rank waits 4 / 1.6 = 2.5 turns for the post
    (4, 4096, 4, 2, 0.8, (0, 12 * 4096 / 1.6, 12 * 4096 / 1.6, 0, 2.5)),
    # off the board (too large, or float16 with no C kernel): the Python path's schedule,
    # alpha once and 2(n-1) messages, and no board term
    (4, (256 << 10) + 4, 4, 0, 1.0, (1, 3 * ((256 << 10) + 4), 3 * ((256 << 10) + 4), 6, 0)),
    (4, 4096, 2, 0, 1.0, (1, 3 * 4096, 3 * 4096, 6, 0)),
])
def test_oneshot_on_the_board_is_one_post(ranks, nbytes, itemsize, cores, share, terms):
    from topology import calibrate
    got = calibrate.coefficients("oneshot", ranks, nbytes, itemsize=itemsize, cores=cores,
                                 core_share=share, board=True)
    assert tuple(got) == pytest.approx(terms, rel=1e-9)
    ring = calibrate.coefficients("ring", ranks, nbytes, itemsize=itemsize, board=True)
    assert ring[4] == 0 and ring[0] == 2 * (ranks - 1)      # other algorithms: no board


def test_calibration_recovers_the_board_term():
    from topology import calibrate
    truth = (30e-6, 4e9, 0.3e-9, 5e-6, 2e-6)
    rows = []
    cases = [("allreduce", a) for a in ("root", "blocked", "ring", "oneshot")] + \
        [("broadcast", "direct")]
    for collective, algo in cases:
        for ranks in (2, 3, 4):
            for nbytes in (4096, 64 << 10, 1 << 20):
                c = calibrate.coefficients(algo, ranks, nbytes, collective, cores=2,
                                           board=True)
                seconds = c[0] * truth[0] + c[1] / truth[1] + c[2] * truth[2] + \
                    c[3] * truth[3] + c[4] * truth[4]
                rows.append({"collective": collective, "algo": algo, "ranks": ranks,
                             "bytes": nbytes, "time_us": seconds * 1e6, "dtype": "float32"})
    fit = calibrate.fit(rows, cores=2)
    assert fit.board == pytest.approx(truth[4], rel=1e-3)
    assert fit.alpha == pytest.approx(truth[0], rel=1e-3)
    assert fit.overhead == pytest.approx(truth[3], rel=1e-3)
    assert fit.parameters()[7] == fit.board
    without = calibrate.fit([r for r in rows if r["algo"] != "oneshot"], cores=2)
    assert without.board == 0.0                  # no row ran on the board: nothing to fit


def test_auto_prices_the_board_only_where_the_parameters_have_one():
    """alpha = o = 10 us, bytes and reductions free, 4 ranks, 8 bytes. Python path: oneshot
    alpha + 6o = 70 us against root's 2(alpha + 3o) = 80 us. A board post of 3 us makes
    oneshot 3 us; a dear one (100 us) hands small calls to root, and at 512 KB (off the
    board) oneshot is priced as its schedule again."""
    from topology import auto
    base = (1e-5, 1e30, 0.0, 1e-5, True, 0, 1.0)
    python_path = {n: sum(p.values()) for n, p in auto.predictions(4, 8, base).items()}
    assert python_path["oneshot"] == pytest.approx(70e-6) and \
        python_path["root"] == pytest.approx(80e-6)
    cheap = {n: sum(p.values()) for n, p in auto.predictions(4, 8, base + (3e-6,)).items()}
    assert cheap["oneshot"] == pytest.approx(3e-6) and cheap["root"] == pytest.approx(80e-6)
    assert auto.choose(4, 8, base + (3e-6,))[0] == "oneshot"
    assert auto.choose(4, 8, base + (100e-6,))[0] == "root"
    large = {n: sum(p.values()) for n, p in
             auto.predictions(4, 512 << 10, base + (100e-6,)).items()}
    assert large["oneshot"] == pytest.approx(70e-6)
    assert "board 0.003" in auto.choose(4, 8, base + (3e-6,))[1]


@pytest.mark.parametrize("algo,cores,traffic", [
    # bytes read + written by the busiest rank on the shared-memory transport, S = 4096, 4
    # ranks, from Schedule.memory's table: a staged send r b + w b (a fanout once per step),
    # a received copy r b + w b, a received reduce r 2b + w b
    ("blocked", 0, 1.5 + 2.25 + 0.5 + 1.5),     # 3 sends + 3 reduces of S/4; 1 fanout + 3 copies
    ("rhd", 0, (1 + 1.5) + (0.5 + 0.75) + (0.5 + 0.5) + (1 + 1)),   # S/2, S/4 out and back
    ("ring", 0, 3 * (0.5 + 0.75) + 3 * (0.5 + 0.5)),   # 3 steps of S/4 each way
    ("root", 0, 3 * 3 + 2),                     # rank 0: reduces 3 x S, stages S once
    # on 2 cores: the node's total over the cores. blocked 4 x 5.75S; root 11S + 3 x 4S
    ("blocked", 2, 4 * 5.75 / 2),
    ("root", 2, (11 + 3 * 4) / 2),
])
def test_memory_term_counts_the_transports_copies(algo, cores, traffic):
    from topology import calibrate
    got = calibrate.coefficients(algo, 4, 4096, cores=cores, board=True, memory=True)
    assert len(got) == 6 and got[5] == pytest.approx(traffic * 4096, rel=1e-9)
    link = calibrate.coefficients(algo, 4, 4096, cores=cores)
    assert tuple(got[:4]) == pytest.approx(tuple(link), rel=1e-9)    # the rest: unchanged


def test_calibration_recovers_the_memory_bandwidth():
    from topology import calibrate
    truth = dict(alpha=30e-6, beta=50e9, gamma=0.0, overhead=5e-6, board=3e-6, memory=30e9)
    rows = []
    for collective, algo in [("allreduce", a) for a in ("root", "blocked", "ring", "rhd",
                                                         "oneshot")] + [("broadcast", "direct")]:
        for ranks in (2, 3, 4):
            for nbytes in (4096, 1 << 20, 16 << 20):
                c = calibrate.coefficients(algo, ranks, nbytes, collective, cores=2,
                                           core_share=0.85, board=True, memory=True)
                seconds = c @ [truth["alpha"], 1 / truth["beta"], truth["gamma"],
                               truth["overhead"], truth["board"], 1 / truth["memory"]]
                rows.append({"collective": collective, "algo": algo, "ranks": ranks,
                             "bytes": nbytes, "time_us": seconds * 1e6})
    fit = calibrate.fit(rows, cores=2)
    assert fit.core_share == 0.85
    assert fit.memory_bandwidth == pytest.approx(truth["memory"], rel=1e-3)
    assert fit.beta == pytest.approx(truth["beta"], rel=1e-3)
    assert fit.board == pytest.approx(truth["board"], rel=1e-3)
    assert fit.parameters()[8] == fit.memory_bandwidth
