"""examples/ps_train.py as a user runs it: a real CTR model on MPI ranks (3 workers, one
server shard), under BSP, ASP and SSP, to its stated accuracy, with the plot written."""
import json

from mpirun import run


def test_ps_train_reaches_its_target_under_every_consistency(tmp_path):
    rc, out = run(4, ["examples/ps_train.py", "--servers", "1", "--out", str(tmp_path)],
                  timeout=400)                 # its defaults: 4 epochs, target 0.80
    assert rc == 0, out[-4000:]
    for mode in ("bsp", "asp", "ssp(s=3)"):
        assert f"# {mode}: final test accuracy" in out and "reached target 0.8" in out
    folder = next(tmp_path.iterdir())
    history = json.loads((folder / "ps_train.json").read_text())
    assert {r["consistency"] for r in history} == {"bsp", "asp", "ssp(s=3)"}
    for mode in ("bsp", "asp", "ssp(s=3)"):
        losses = [r["loss"] for r in history if r["consistency"] == mode]
        assert losses[-1] < losses[0]
    assert (folder / "ps_train.png").stat().st_size > 10_000
