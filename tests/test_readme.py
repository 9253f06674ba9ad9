"""The README's usage example, run as a user would: under mpiexec on 4 ranks."""
import re

from mpirun import ROOT, run


def test_readme_usage_example_runs_on_four_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    script = tmp_path / "sum.py"
    script.write_text(code)
    rc, out = run(4, [str(script)], timeout=120, env={"PYTHONUNBUFFERED": ""})  # one write per rank
    assert rc == 0, out
    lines = sorted(line for line in out.splitlines() if line[:1].isdigit())
    assert len(lines) == 4
    for rank, line in enumerate(lines):
        assert line == f"{rank} [ 0. 10. 20. 30. 40. 50. 60. 70. 80. 90.]", out


def test_readme_parameter_server_example_runs_on_four_workers_and_two_servers(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S)
                if "import numpy as np, ps" in block)
    script = tmp_path / "ps_demo.py"
    script.write_text(code.replace('"ckpt"', repr(str(tmp_path / "ckpt"))))
    rc, out = run(6, [str(script)], timeout=120, env={"PYTHONUNBUFFERED": ""})
    assert rc == 0, out
    assert sorted(line.split()[1] for line in out.splitlines()
                  if line.startswith("worker ")) == ["0", "1", "2", "3"], out
    assert (tmp_path / "ckpt" / "manifest.json").exists()
