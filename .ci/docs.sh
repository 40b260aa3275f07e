#!/usr/bin/env bash
# The Sphinx site (docs/), warnings as errors.  Runs in the CI venv, where the
# package and torch are installed, so autodoc imports the real modules.
set -euo pipefail
python -m pip install --quiet $(python .ci/extra-reqs.py docs)
rm -rf docs/_build docs/api/generated
sphinx-build -W --keep-going -q -b html docs docs/_build/html
test -s docs/_build/html/index.html
echo "docs built: docs/_build/html/index.html"
