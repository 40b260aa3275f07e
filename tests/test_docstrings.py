"""The examples in the public docstrings run and print what they say (doctest).

The API reference (docs/) is generated from these docstrings, so a stale
example would be published; here each one runs against the installed
package.  Add a module to MODULES when its docstrings get examples (the
optimizer classes' are generated from their algorithm descriptions).
"""
import doctest
import importlib

import pytest

import adaptopt

MODULES = ["adaptopt", "adaptopt.reference", "adaptopt.schedules", "adaptopt._config", "adaptopt._bench",
           "adaptopt.demo"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    if name == "adaptopt.demo":
        pytest.importorskip("matplotlib")    # demo.plot's example writes a PNG
    monkeypatch.chdir(tmp_path)              # an example may write files
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name, globs={}) if t.examples]
    assert tests, f"{name} has no docstring examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    isa, threads = adaptopt.get_isa(), adaptopt._config._num_threads
    try:
        for t in tests:
            runner.run(t, out=report.append)
    finally:                                 # examples change process-wide settings
        adaptopt.set_isa(isa)
        adaptopt.set_num_threads(threads)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, "".join(report)
