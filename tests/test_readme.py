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


def readme_commands():
    """The commands of the README's "Two commands" block, without their comments."""
    section = README.read_text().split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_commands_verbatim():
    """.ci/run runs the README's two commands exactly as written, before anything else."""
    commands = readme_commands()
    assert commands == ["pip install . && python -m adaptopt demo --quick",
                        'pip install ".[test]" && python -m pytest']
    ci = (README.parent / ".ci" / "run").read_text()
    code = [line.strip() for line in ci.splitlines() if not line.lstrip().startswith("#")]
    for cmd in commands:
        assert any(line == cmd or line.startswith(cmd + " ||") for line in code), (
            f".ci/run does not run the README's command {cmd!r} as written")
    # and the steps that run them come first
    steps = [line for line in code if line.startswith("step ")]
    assert steps[0].split()[-1] == "readme_install" and steps[1].split()[-1] == "readme_test"
    prose = " ".join(README.read_text().split())
    assert "The test command is `python -m pytest`, run from the repository root." in prose
