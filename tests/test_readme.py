"""Every Python code block in README.md runs."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_block_runs(k, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    code = BLOCKS[k]
    if "import torch" in code or "adaptopt.torch" in code:
        pytest.importorskip("torch")
    if "matplotlib" in code:
        pytest.importorskip("matplotlib")
    exec(compile(code, f"README.md block {k}", "exec"), {"__name__": "__readme__"})
