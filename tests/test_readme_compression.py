"""The README's compression and fusion example, run as a user would: on 4 ranks."""
import re

from mpirun import ROOT, run


def test_readme_compression_example_runs_on_four_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S)
                if "compression=" in block)
    script = tmp_path / "compress.py"
    script.write_text(code)
    rc, out = run(4, [str(script)], timeout=120, env={"PYTHONUNBUFFERED": ""})
    assert rc == 0, out
    lines = sorted(line for line in out.splitlines() if line[:1].isdigit())
    assert lines == [f"{rank} [6. 6. 6.]" for rank in range(4)], out
