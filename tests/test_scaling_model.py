"""Compact schedules and the modelled scaling sweep: the patterns are the very transfers the
explicit schedules list, they are priced to the same seconds without listing them, and
`python -m bench scaling --preset` models 4096 nodes with the textbook shapes."""
import json
import subprocess
import sys

import pytest

import pattern_ps
from bench import crossover
from bench.scaling_model import ScalingModel, strategies, sweep
from collectives import ALGORITHMS, blocked, host, rhd, ring, root
from collectives.schedule import Schedule, Transfer, chunk_nbytes
from mpirun import ROOT
from topology.cost import scalable_algorithms
from topology.model import TopologyError, closed_form
from topology.presets import preset

STRATEGIES = {"root": root, "host": host, "blocked": blocked, "ring": ring}


# ---- the schedules as they were written out before the compact form (the reference) ----

def listed_root(n, count, itemsize):
    s = count * itemsize
    return Schedule([[Transfer(i, 0, s, reduce=True) for i in range(n) if i != 0],
                     [Transfer(0, i, s) for i in range(n) if i != 0]])


def listed_host(n, count, itemsize):
    s = count * itemsize
    return Schedule([[Transfer(i, "host", s, reduce=True) for i in range(n)],
                     [Transfer("host", i, s) for i in range(n)]], placement={"host": 0})


def listed_blocked(n, count, itemsize):
    b = chunk_nbytes(count, n, itemsize)
    return Schedule([[Transfer(i, j, b[j], reduce=True) for i in range(n) for j in range(n)
                      if i != j],
                     [Transfer(j, i, b[j]) for j in range(n) for i in range(n) if i != j]])


def listed_ring(n, count, itemsize):
    c = chunk_nbytes(count, n, itemsize)
    return Schedule([[Transfer(r, (r + 1) % n, c[(r - s - 1) % n], reduce=True)
                      for r in range(n)] for s in range(n - 1)]
                    + [[Transfer(r, (r + 1) % n, c[(r - s) % n]) for r in range(n)]
                       for s in range(n - 1)])


LISTED = {"root": listed_root, "host": listed_host, "blocked": listed_blocked,
          "ring": listed_ring}


@pytest.mark.parametrize("n", range(1, 7))
@pytest.mark.parametrize("itemsize", [1, 4, 8])
def test_compact_expands_to_the_listed_transfers(n, itemsize):
    for count in sorted({0, 1, max(n - 1, 0), n, n + 1, 7 * n + 3, 1009}):
        for name, module in STRATEGIES.items():
            compact = module.allreduce_pattern(n, count, itemsize)
            listed = LISTED[name](n, count, itemsize)
            assert compact.expand().steps == listed.steps, (name, n, count)
            assert compact.expand().placement == listed.placement
            assert compact.step_count == len(listed.steps)
            assert module.allreduce_schedule(n, count, itemsize).steps == listed.steps


CASES = [("d2l-4gpu-pcie", {}), ("d2l-4gpu-pcie", {"nodes": 3}), ("dgx1-v100", {}),
         ("ethernet-100g", {"nodes": 5, "gpus_per_node": 3}), ("infiniband-hdr", {"nodes": 9}),
         ("local", {})]


def _same(topology, compact, ranks):
    fast, listed = closed_form(topology, compact, ranks), closed_form(topology,
                                                                    compact.expand(), ranks)
    assert fast == pytest.approx(listed, rel=1e-9, abs=1e-15)
    return fast


@pytest.mark.parametrize("name,settings", CASES)
def test_compact_prices_exactly_like_the_listed_schedule(name, settings):
    """Trees (cut counting), the DGX-1's NVLink mesh (not a tree: expanded), and the
    local star; sizes with remainders, so chunk sizes differ along the ring."""
    t = preset(name, **settings)
    for n in sorted({1, 2, 3, len(t.ranks) - 1, len(t.ranks)} - {0}):
        for count in (0, 1, n + 1, 1009, 3_571_429):
            for module in [*STRATEGIES.values(), rhd]:
                _same(t, module.allreduce_pattern(n, count, 4), n)


@pytest.mark.parametrize("where", ["spare", "node", "colocated"])
def test_servers_and_groups_price_exactly(where):
    """Named server endpoints on extra nodes, beside the workers, or on a rank; groups of
    rings and of pushes that share the servers (a hierarchical PS)."""
    t = preset("ethernet-25g", nodes=7, gpus_per_node=2)
    for servers in (1, 2, 3):
        for count in (5, 1001, 2_000_003):
            _same(t, pattern_ps.allreduce_pattern(8, count, 4, servers=servers, where=where), 8)
            _same(t, pattern_ps.hierarchical_pattern(8, count, 4, 2, servers, where), 8)
    seconds = _same(preset("dgx1-v100", nodes=2),
                    pattern_ps.hierarchical_pattern(16, 999, 4, 8, 2, "node"), 16)
    assert seconds > 0


def test_places_for_named_endpoints():
    t = preset("ethernet-100g", nodes=4, gpus_per_node=2)
    assert t.place(("host", 3), 4) == "n1.cpu" and t.place("host", 4) == "n0.cpu"
    assert t.place(("node", 1), 4) == "n1.cpu"
    assert t.place(("spare", 0), 4) == "n2.cpu" and t.place(("spare", 1), 4) == "n3.cpu"
    assert t.place(("server", 0), 4, {("server", 0): 3}) == "n1.gpu1"
    with pytest.raises(TopologyError, match="spare 2 does not exist"):
        t.place(("spare", 2), 4)
    with pytest.raises(TopologyError, match="'server0' has no location"):
        t.place("server0", 4)


def test_4096_nodes_for_every_strategy():
    """ethernet-100g, one GPU per node, 100M, each strategy's docstring formula by hand:
    alpha = 12 us of path latency (PCIe 1 + Ethernet 5 + 5 + PCIe 1), o = 3 us per message
    at an endpoint (TCP), 12.5 GB/s NICs. The ring pays 2(n-1) latencies, blocked 2(n-1)
    overheads per step at every rank, root and host their incast, rhd 2 log2(n) steps."""
    size, n, alpha, o, nic = 100 << 20, 4096, 12e-6, 3e-6, 100 / 8 * 1e9
    ALGORITHMS.register("test-ps", "pattern_ps")
    try:
        model = ScalingModel("ethernet-100g", None, 4)
        drawn = strategies(scalable_algorithms(), n, 1)
        _, series = sweep(model, drawn, [1, 2048, n], [size])
    finally:
        ALGORITHMS.unregister("test-ps")
    t = {s["algo"]: dict(zip(s["nodes"], s["seconds"])) for s in series}
    assert {"root", "host", "blocked", "ring", "rhd", "test-ps(1 server)",
            "test-ps(n servers)"} <= set(t)
    assert all(seconds > 0 for algo in t for seconds in [t[algo][n]])
    largest_chunk = -(-size // 4 // n) * 4
    assert t["ring"][n] == pytest.approx(2 * (n - 1) * (alpha + 2 * o + largest_chunk / nic),
                                         rel=1e-9)
    assert t["root"][n] == pytest.approx(2 * ((n - 1) * size / nic + alpha + (n - 1) * o),
                                         rel=1e-9)
    assert t["host"][n] == pytest.approx(2 * ((n - 1) * size / nic + alpha + n * o), rel=1e-9)
    for algo in ("root", "host"):
        assert t[algo][n] / t[algo][2048] == pytest.approx((n - 1) / 2047, rel=1e-4)
    assert t["blocked"][n] == pytest.approx(
        2 * ((n - 1) / n * size / nic + alpha + 2 * (n - 1) * o), rel=1e-4)
    assert t["rhd"][n] == pytest.approx(2 * (n - 1) / n * size / nic + 2 * 12 * (alpha + 2 * o),
                                        rel=1e-4)
    assert t["rhd"][n] < t["blocked"][n] < t["ring"][n] < t["root"][n]
    assert t["test-ps(1 server)"][n] == pytest.approx(2 * (n * size / nic + alpha + n * o),
                                                      rel=1e-9)
    assert t["test-ps(n servers)"][n] == pytest.approx(2 * (size / nic + alpha + n * o),
                                                       rel=1e-3)
    assert t["ring"][1] == 0.0 and t["host"][1] > 0      # one GPU: only host moves bytes


def test_crossovers_are_bisected_to_the_exact_count():
    times = {"a": lambda n: float(n), "b": lambda n: 10.5, "c": lambda n: 10.5,
             "y": lambda n: 0.0 if n == 1 else 5.0, "z": lambda n: 0.0 if n == 1 else 3.0}
    found = crossover.changes(list(times), [1, 2, 4, 8, 16, 32],
                              lambda label, n: times[label](n), exact=True)
    said = [crossover.sentence(c, lambda n: f"{n} nodes", "at 1M") for c in found]
    assert "a falls behind b above 10 nodes at 1M" in said
    assert "a falls behind z above 3 nodes at 1M" in said
    assert not any("b falls behind c" in s or "c falls behind b" in s for s in said)
    assert "z falls behind a above 1 nodes at 1M" in said    # a: 1 s, z: 0 s at 1 node
    assert not any("y falls behind z" in s for s in said)   # both 0 s at 1 node: no order
    level = crossover.changes(["p", "q"], [1, 5], lambda l, n: 2.0 if l == "q" or n > 3 else 1.0,
                              exact=True)
    assert crossover.sentence(level[0], str, "") == "q draws level with p above 3 "


def bench(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_bench_scaling_preset_json_table_and_files(tmp_path):
    result = bench("scaling", "--preset", "ethernet-100g", "--nodes", "1-64", "--sizes",
                   "1M,100M", "--json", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    series = [x for x in lines if x["kind"] == "series"]
    assert {"root", "host", "blocked", "ring"} <= {s["algo"] for s in series}
    for s in series:
        assert {"algo", "preset", "bytes", "nodes", "ranks", "seconds"} <= set(s)
        assert s["nodes"] == [1, 2, 4, 8, 16, 32, 64] and s["preset"] == "ethernet-100g"
    assert all(x["cause"] for x in lines if x["kind"] == "crossover")
    (folder,) = tmp_path.iterdir()
    assert {"scaling_model.csv", "results.json", "scaling_model.png",
            "scaling_model_sizes.png"} <= {p.name for p in folder.iterdir()}
    stored = json.loads((folder / "results.json").read_text())
    assert stored["evaluator"] == "closed-form" and stored["crossovers"]
    # 100M: the ring's 2(n-1) steps against a PS with a server on each node, whose workers
    # push S through their 16 GB/s PCIe link (to n servers, n messages) and pull it back
    size, count = 100 << 20, (100 << 20) // 4

    def ring_(n):
        return 2 * (n - 1) * (12e-6 + 2 * 3e-6 + -(-count // n) * 4 / 12.5e9)

    def ps_per_node(n):
        return 2 * (12e-6 + n * 3e-6 + max(size / 16e9, (n - 1) / n * size / 12.5e9))
    behind = next(n for n in range(2, 65) if ring_(n) > ps_per_node(n))
    text = bench("scaling", "--preset", "ethernet-100g", "--nodes", "1-64", "--size", "100M",
                 "--algo", "ring,ps", "--out", str(tmp_path))
    assert text.returncode == 0, text.stderr
    assert f"#   ring falls behind ps(n per-node) above {behind - 1} nodes at 100M: its " \
        "latency" in text.stdout and behind == 5
    assert "nodes  ranks  ring" in text.stdout


# ethernet-100g, one GPU per node (the docstrings' formulas, by hand): 12 us of path latency
# between nodes, 3 us per message at an endpoint, 12.5 GB/s NICs; S = 1K = 256 float32
ALPHA, O, NIC, S = 12e-6, 3e-6, 12.5e9, 1024


def _root(n):        # rank 0 takes n-1 messages, then posts n-1; its NIC carries (n-1)S each way
    return 2 * (ALPHA + (n - 1) * O + (n - 1) * S / NIC)


def _blocked(n):     # every rank posts n-1 and takes n-1 per step; its NIC (n-1)/n S each way
    return 2 * (ALPHA + 2 * (n - 1) * O + (n - 1) * (S // 4 // n) * 4 / NIC)


def _rhd(n):         # fold and unfold (1 message each end, S) + 2 log2 p steps of 2 messages
    p = 1 << (n.bit_length() - 1)
    k = p.bit_length() - 1
    fold = 2 * (ALPHA + O + S / NIC) if n > p else 0.0
    return fold + 2 * k * (ALPHA + 2 * O) + 2 * (p - 1) / p * S / NIC


def _first_behind(slower, faster, counts):
    """(last count where `slower` is not behind, first where it is) from the formulas."""
    behind = [n for n in counts if slower(n) > faster(n) * (1 + 1e-9)]
    first = next(n for n in counts if n > 1 and all(m in behind for m in counts if m >= n))
    return first - 1, first


def _crossovers(out, preset_name, nodes, size, algos):
    sizes = ("--sizes" if "," in size else "--size")
    result = bench("scaling", "--preset", preset_name, "--nodes", nodes, sizes, size,
                   "--algo", algos, "--json", "-q", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return [x for x in map(json.loads, result.stdout.splitlines()) if x["kind"] == "crossover"]


def test_ethernet_100g_crossovers_are_where_the_formulas_put_them(tmp_path):
    """Per-message overhead against latency: root's incast of n-1 messages per step against
    rhd's 2 log2(n) latencies, and blocked's 2(n-1) messages per step against the same."""
    counts = list(range(1, 65))
    found = {(c["slower"], c["faster"]): c for c in _crossovers(tmp_path, "ethernet-100g",
                                                                "1-64", "1K", "root,blocked,rhd")}
    root_rhd = found[("root", "rhd")]
    assert (root_rhd["last"], root_rhd["first"]) == _first_behind(_root, _rhd, counts) == (25, 26)
    assert root_rhd["cause"].startswith("its overhead")
    blocked_rhd = found[("blocked", "rhd")]
    assert (blocked_rhd["last"], blocked_rhd["first"]) == _first_behind(_blocked, _rhd, counts) \
        == (10, 11)
    assert blocked_rhd["cause"].startswith("its overhead") and "lead in latency" in \
        blocked_rhd["cause"]


def test_dgx_h100_crossover_rhd_behind_ring_across_nodes(tmp_path):
    """100M on DGX H100s: in one box (NVSwitch, 2 us path, 1 us per message, 450 GB/s) rhd's
    6 steps beat the ring's 14 on the same 2(7/8)S bytes; across two boxes rhd's first
    halving sends S/2 from each of 8 GPUs through their box's one 50 GB/s NIC, where the
    ring sends one chunk S/16 per step from a GPU through its 32 GB/s PCIe link to the NIC
    (6 us path): rhd falls behind above 1 node."""
    size, nvlink, pcie, ib = 100 << 20, 450e9, 32e9, 50e9
    ring_one = 14 * (2e-6 + 2 * 1e-6) + 2 * 7 / 8 * size / nvlink
    rhd_one = 6 * (2e-6 + 2 * 1e-6) + 2 * 7 / 8 * size / nvlink
    ring_two = 30 * (6e-6 + 2 * 1e-6 + size / 16 / pcie)    # every step: one chunk off-box
    rhd_two_at_least = 8 * (size / 2) / ib                  # its first step alone
    assert rhd_one < ring_one and ring_two < rhd_two_at_least
    (change,) = _crossovers(tmp_path, "dgx-h100", "1-2", "100M", "ring,rhd")
    assert (change["slower"], change["faster"], change["last"], change["first"]) == \
        ("rhd", "ring", 1, 2)
    assert change["cause"].startswith("its bytes")
    model = ScalingModel("dgx-h100", None, 4)
    (ring_strategy,) = strategies(["ring"], 2, 8)
    assert model.seconds(ring_strategy, 1, size) == pytest.approx(ring_one, rel=1e-9)
    assert model.seconds(ring_strategy, 2, size) == pytest.approx(ring_two, rel=1e-9)


@pytest.mark.parametrize("args,message", [
    (["--preset", "ethernet-100g", "--nodes", "0-64"], "--nodes: '0-64': counts go from 1"),
    (["--preset", "ethernet-100g", "--nodes", "64-8"], "--nodes: '64-8': range reversed"),
    (["--preset", "ethernet-100g", "--nodes", "lots"], "--nodes: cannot read 'lots'"),
    (["--preset", "ethernet-100g", "--sizes", "1M,huge"], "--sizes: cannot read size 'huge'"),
    (["--preset", "ethernet-100g", "--size", "0"], "sizes must be at least one float32"),
    (["--preset", "ethernet-100g", "--gpus-per-node", "0"], "--gpus-per-node must be >= 1"),
    (["--preset", "dgx-h100", "--gpus-per-node", "4"], "preset 'dgx-h100' has a fixed number"),
    (["--preset", "dgx-h100", "--nodes", "1-64"], "preset 'dgx-h100' has cycles"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "ethernet-100g", "--algo", "auto"], "cannot model 'auto' at scale"),
    (["--nodes", "1-64"], "--nodes, --sizes and --gpus-per-node model a preset"),
])
def test_bad_scaling_input_is_one_line_and_exit_2(args, message):
    result = bench("scaling", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bench: error: {message}"), result.stderr


def test_published_anchors_land_on_the_same_side(tmp_path):
    """MPICH runs recursive doubling for allreduces up to 2 KB and Rabenseifner above: on
    64 ethernet-100g nodes the model prefers rd (k steps of the whole buffer) at 2 KB and
    rhd (2k steps of halves) at 1 MB, its switch lying between, where rd's k S/B overtakes
    rhd's extra k latencies. BytePS: a PS whose servers bring their own NICs beats the ring
    once enough nodes join; here the ring's 2(n-1) latencies are what it loses by."""
    n, k = 64, 6
    rd = {size: k * (ALPHA + 2 * O + size / NIC) for size in (2048, 1 << 20)}
    rhd = {size: 2 * k * (ALPHA + 2 * O) + 2 * (n - 1) / n * size / NIC for size in rd}
    assert rd[2048] < rhd[2048] and rhd[1 << 20] < rd[1 << 20]
    switch = k * (ALPHA + 2 * O) * NIC / (k - 2 * (n - 1) / n)        # 335 KB
    model = ScalingModel("ethernet-100g", None, 4)
    drawn = {s.label: s for s in strategies(["rhd", "ring", "ps"], n, 1)}
    for size in rd:
        assert model.seconds(drawn["rd"], n, size) == pytest.approx(rd[size], rel=1e-9)
        assert model.seconds(drawn["rhd"], n, size) == pytest.approx(rhd[size], rel=1e-9)
    (change,) = [c for c in _crossovers(tmp_path, "ethernet-100g", "64", "2K,256K,512K,1M",
                                        "rhd") if c["axis"] == "bytes"]
    assert (change["slower"], change["faster"]) == ("rd", "rhd")
    assert change["last"] <= switch < change["first"] and change["first"] == 512 << 10

    size = 100 << 20
    count = size // 4

    def ps(n):           # n servers on machines of their own: push S, then pull S, per NIC
        return 2 * (ALPHA + n * O + max(size, n * -(-count // n) * 4) / NIC)

    def ring_(n):
        return 2 * (n - 1) * (ALPHA + 2 * O + -(-count // n) * 4 / NIC)
    counts = list(range(2, 65))
    expected = _first_behind(ring_, ps, counts)
    for nodes in (2, 25, 64):
        assert model.seconds(drawn["ps(n servers)"], nodes, size) == pytest.approx(ps(nodes),
                                                                                  rel=1e-9)
    found = [c for c in _crossovers(tmp_path, "ethernet-100g", "1-64", "100M", "ring,ps")
             if (c["slower"], c["faster"]) == ("ring", "ps(n servers)")]
    assert [(c["last"], c["first"]) for c in found] == [expected] == [(24, 25)]
