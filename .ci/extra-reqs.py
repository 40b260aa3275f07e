"""Print the requirements of one of pyproject.toml's extras, one per line.

    pip install $(python .ci/extra-reqs.py lint)

so that CI installs a tool at the version the project pins, without
reinstalling the package itself.
"""
import sys
import tomllib
from pathlib import Path

extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
    "project"]["optional-dependencies"]
if len(sys.argv) != 2 or sys.argv[1] not in extras:
    sys.exit(f"usage: extra-reqs.py EXTRA (one of {', '.join(extras)})")
print("\n".join(extras[sys.argv[1]]))
