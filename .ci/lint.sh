#!/usr/bin/env bash
# ruff at the version pyproject.toml's lint extra pins, over the whole repository.
set -euo pipefail
python -m pip install --quiet $(python .ci/extra-reqs.py lint)
ruff --version
ruff check .
