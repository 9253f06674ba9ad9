"""The soak (bench/soak.py): thousands of mixed collectives, numpy and async torch, every
result checked, with each rank's RSS flat within 10% after warm-up; and a planted leak that
the soak must report.

CI runs 3000 calls (about 15 s of collectives here); `python -m bench soak` runs the full
10,000 (RINGPS_SOAK_CALLS=10000 makes this test do the same)."""
import json
import os
from pathlib import Path

from mpirun import run

CALLS = int(os.environ.get("RINGPS_SOAK_CALLS", 3000))
TIMEOUT = 300 + CALLS // 20


def soak(tmp_path: Path, ranks: int, *options: str) -> tuple[int | None, str, dict | None]:
    args = ["-m", "bench", "soak", "--out", str(tmp_path), *options]
    rc, out = run(ranks, args, timeout=TIMEOUT)
    found = sorted(tmp_path.glob("*-soak/results.json"))
    return rc, out, json.loads(found[-1].read_text()) if found else None


def test_soak_memory_is_flat_after_warm_up(tmp_path):
    rc, out, result = soak(tmp_path, 2, "--calls", str(CALLS), "--every", "500")
    assert rc is not None, f"bench soak hung (killed after {TIMEOUT} s):\n{out[-4000:]}"
    assert rc == 0, f"bench soak failed (rc={rc}):\n{out[-4000:]}"
    assert result is not None, f"no results.json written:\n{out[-4000:]}"
    assert result["calls"] == CALLS and result["torch"] and result["reference_calls"] == 1000
    marks = sorted({row["calls"] for row in result["rows"]})
    assert marks == sorted({1, *range(500, CALLS + 1, 500)}), marks
    for rank in result["per_rank"]:
        samples = {row["calls"]: row["rss_bytes"] for row in result["rows"]
                   if row["rank"] == rank["rank"]}
        base = samples[1000]
        assert base > 10 << 20, f"rank {rank['rank']}: RSS {base} bytes is not plausible"
        worst = max(abs(v - base) for c, v in samples.items() if c >= 1000) / base
        assert worst <= 0.10, (f"rank {rank['rank']}: RSS moved {worst:.1%} after call 1000 "
                               f"(samples {samples})")
        assert rank["flat"], rank
    assert "soak: FAILED" not in out, out[-4000:]


def test_soak_reports_a_planted_leak(tmp_path):
    """64 KiB kept per call: after 1000 more calls that is 64 MiB on a ~70 MiB process."""
    rc, out, result = soak(tmp_path, 2, "--calls", "1500", "--every", "250",
                           "--warmup-calls", "500", "--no-torch", "--leak-kib", "64", "-q")
    assert rc not in (None, 0), f"a 64 KiB-per-call leak went unreported:\n{out[-4000:]}"
    assert "soak: FAILED: memory not flat within 10% after call 500" in out, out[-4000:]
    assert result is not None and not result["flat"], result
    for rank in result["per_rank"]:
        assert rank["bytes_per_call"] > 50 * 1024, rank
