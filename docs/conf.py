"""Sphinx configuration of adaptopt's documentation.

Build: ``pip install ".[docs]" && sphinx-build -W docs docs/_build/html``
(after installing adaptopt: autodoc imports the installed package).  The
user guide, numerics and performance pages include README.md's sections,
so the README stays the one place their text is written; the API reference
is generated from the docstrings (numpydoc).
"""

import importlib.util
from pathlib import Path

import adaptopt

HERE = Path(__file__).parent

project = "adaptopt"
copyright = "the adaptopt developers"
author = "the adaptopt developers"
version = release = adaptopt.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# --- API reference: autosummary stubs from the docstrings, numpydoc sections
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"          # numpydoc's Parameters sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # members are listed by the class template
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()
# adaptopt.torch subclasses torch.optim.Optimizer: without torch, document it mocked
if importlib.util.find_spec("torch") is None:
    autodoc_mock_imports = ["torch"]

# --- Markdown (README sections)
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]   # README's sections start at "##" under a page title

# --- the benchmark plot, when one has been committed (bench/suite.py --plot docs/bench.png)
plot = HERE / "bench.png"
(HERE / "_generated").mkdir(exist_ok=True)
(HERE / "_generated" / "benchplot.md").write_text(
    "```{image} ../bench.png\n:alt: GB/s per optimizer step against size, adaptopt and its "
    "peers, with the roofline\n```\n" if plot.exists() else
    "No benchmark plot is committed yet: `python bench/suite.py --plot docs/bench.png` "
    "writes one (GB/s against size per algorithm and thread count, each implementation "
    "with the roofline).\n")

# --- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"adaptopt {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}


# --- adaptopt.torch's classes append torch.optim's own docstring, which is
# written for torch's Sphinx site (its labels, its roles): published here, it
# would be a copy of someone else's page that does not build.  Keep our part
# and point to torch's documentation instead.
TORCH_DOC_MARKER = "torch.optim's documentation follows."


def _torch_docstrings(app, what, name, obj, options, lines):
    if what != "class" or not name.startswith("adaptopt.torch."):
        return
    for i, line in enumerate(lines):
        if TORCH_DOC_MARKER in line:
            lines[i] = line.replace(
                TORCH_DOC_MARKER,
                f"For the arguments, see ``torch.optim.{name.rsplit('.', 1)[1]}`` in "
                "PyTorch's documentation.")
            del lines[i + 1:]
            return


def setup(app):
    app.connect("autodoc-process-docstring", _torch_docstrings, priority=100)
