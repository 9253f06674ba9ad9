"""bench's arithmetic and parsing, serially."""
import pytest

from bench import d2l
from bench.definitions import DEFINITIONS
from bench.sweep import _ratios
from bench.units import format_size, gbps, parse_size, size_range


@pytest.mark.parametrize("text,value", [("1024", 1024), ("1K", 1024), ("4k", 4096),
                                        ("16M", 16 << 20), ("1G", 1 << 30), ("160MiB", 160 << 20),
                                        ("160MB", 160 * 10 ** 6), ("2kb", 2000), ("0.5K", 512)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "K", "12Q", "-4K", "1T", "4KIBB"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match="cannot read size"):
        parse_size(bad)


def test_size_range_like_nccl_tests():
    assert size_range(1024, 16 << 20, 4) == [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18,
                                              1 << 20, 1 << 22, 1 << 24]
    assert [format_size(s) for s in size_range(1024, 8192, 2)] == ["1K", "2K", "4K", "8K"]
    with pytest.raises(ValueError, match="size range reversed"):
        size_range(1 << 20, 1024, 2)
    with pytest.raises(ValueError, match="-f must be >= 2"):
        size_range(1, 8, 1)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_bus_bandwidth_factors(n):
    assert DEFINITIONS["allreduce"].busbw_factor(n) == pytest.approx(2 * (n - 1) / n)
    assert DEFINITIONS["reduce_scatter"].busbw_factor(n) == pytest.approx((n - 1) / n)
    assert DEFINITIONS["allgather"].busbw_factor(n) == pytest.approx((n - 1) / n)
    assert DEFINITIONS["broadcast"].busbw_factor(n) == 1.0


def test_units_are_gb_of_1e9():
    assert gbps(2e9, 1.0) == 2.0


def test_ratio_is_busbw_over_mpi():
    rows = [{"algo": "mpi", "busbw": 2.0, "time_us": 10.0},
            {"algo": "ring", "busbw": 3.0, "time_us": 7.0}]
    _ratios(rows)
    assert [r["ratio"] for r in rows] == [1.0, 1.5]


def test_d2l_table_relates_to_blocked_like_the_chapter():
    rows = [{"algo": a, "time_us": t, "wrong": 0} for a, t in
            [("root", 4000.0), ("host", 5000.0), ("blocked", 1000.0), ("ring", 900.0),
             ("mpi", 1200.0)]]
    headers, body, bars = d2l.table(rows)
    by = {row[0]: dict(zip(headers, row)) for row in body}
    assert by["root"]["d2l ms"] == "60" and by["root"]["d2l x split"] == "4.00"
    assert by["host"]["d2l x split"] == "5.33" and by["host"]["x blocked here"] == "5.00"
    assert by["ring"]["d2l ms"] == "6" and by["ring"]["d2l x split"] == "-"
    assert by["mpi"]["d2l name"] == "(baseline)"


def test_plot_styles_one_colour_per_strategy_and_a_line_style_per_variant():
    from bench.plots import Styles
    styles = Styles()
    assert styles.colour("ring/mpi") == styles.colour("ring/shm") == styles.colour("ring*")
    assert styles.colour("ring") != styles.colour("blocked")
    assert styles.colour("ring[bidirectional]") != styles.colour("ring")
    assert [styles.dashes(a) for a in ("mpi", "ring/mpi", "ring/shm", "ring/shm*")] == \
        ["--", ":", "-", "-."]


def test_a_cell_measured_in_several_sections_takes_their_median():
    """The suite measures 4 ranks at 16 MB in its sweep and again in its scaling section;
    the agreement table judges the median of both, not whichever row came last."""
    from bench.agreement import measured_cells

    def row(algo, us, ranks=4, nbytes=16 << 20):
        return {"collective": "allreduce", "algo": algo, "ranks": ranks, "bytes": nbytes,
                "time_us": us}
    rows = [row("ring", 10_000), row("blocked", 15_000), row("ring", 12_000),
            row("ring", 30_000), row("mpi", 1_000), row("ring", 99, ranks=1)]
    cells = measured_cells(rows, ["ring", "blocked"])
    assert list(cells) == [(4, 16 << 20)]          # mpi is no candidate; 1 rank: no choice
    assert cells[(4, 16 << 20)] == {"ring": 12_000e-6, "blocked": 15_000e-6}


def test_the_same_algorithm_timed_twice_gives_the_noise_floor():
    """auto's row against the row of the algorithm it ran, in the same cell: 1.2 and 0.9
    (the median of blocked's two rows, 1000 and 1200 us, is 1100); one rank and a pick not
    measured beside it give nothing."""
    from bench.agreement import repeat_ratios

    def row(algo, us, ranks=4, nbytes=1024, chosen=""):
        return {"collective": "allreduce", "algo": algo, "ranks": ranks, "bytes": nbytes,
                "time_us": us, "chosen": chosen}
    rows = [row("root", 500), row("auto", 600, chosen="root"),
            row("blocked", 1000, nbytes=4096), row("blocked", 1200, nbytes=4096),
            row("auto", 990, nbytes=4096, chosen="blocked"),
            row("auto", 700, nbytes=8192, chosen="rhd"),
            row("root", 5, ranks=1), row("auto", 9, ranks=1, chosen="root")]
    assert repeat_ratios(rows) == pytest.approx([1.2, 0.9])
