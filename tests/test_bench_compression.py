"""`python -m bench compression` as a user runs it (it starts its own ranks): bad options end
in one line and exit 2; a short run leaves a row per codec, CSV, JSON and the PNG."""
import csv
import json
import os
import subprocess
import sys

import pytest

from mpirun import ROOT


def bench(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench", "compression", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


@pytest.mark.parametrize("args,message", [
    (["--codecs", "zip"], "bench: error: --codecs: unknown compression 'zip'"),
    (["--codecs", "topk:3"], "bench: error: --codecs: compression 'topk:3': the fraction"),
    (["--algo", "auto"], "bench: error: --algo: bench compression counts the bytes of root"),
    (["--epochs", "0"], "bench: error: --epochs must be >= 1"),
])
def test_bad_options_are_one_line_and_exit_2(args, message):
    result = bench(*args, "--np", "2")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), \
        result.stderr


def test_a_short_run_reports_every_codec_against_the_uncompressed_one(tmp_path):
    pytest.importorskip("torch")
    result = bench("--epochs", "1", "--codecs", "fp16,topk:0.01+ef", "--out", str(tmp_path),
                   "--np", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    rows = list(csv.DictReader(open(folder / "compression.csv")))
    assert [r["codec"] for r in rows] == ["none", "fp16", "topk:0.01+ef"]
    ratios = {r["codec"]: float(r["bytes_ratio"]) for r in rows}
    assert ratios["none"] == 1.0 and ratios["fp16"] == 0.5
    # 2 ranks, ring: uncompressed each rank sends S; sparse, one payload of 8 bytes per kept
    # element (1% of the parameters, rounded up)
    params = int(rows[0]["params"])
    assert ratios["topk:0.01+ef"] == pytest.approx(8 * -(-params // 100) / (4 * params))
    saved = json.loads((folder / "results.json").read_text())
    assert set(saved["curves"]) == {"none", "fp16", "topk:0.01+ef"}
    assert (folder / "loss_curves.png").exists() or not _matplotlib()
    assert "topk:0.01+ef" in result.stdout


def _matplotlib() -> bool:
    import importlib.util
    return importlib.util.find_spec("matplotlib") is not None
