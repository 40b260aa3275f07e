"""The full benchmark suite, the same as ``python -m adaptopt bench``.

    python bench/bench_suite.py                      # everything (~15-20 min on 2 cores)
    python bench/bench_suite.py --quick              # about a minute
    python bench/bench_suite.py --algos adam --sizes 1M,16M --json out.json --plot out.png

See ``python bench/bench_suite.py --help`` and the docstring of
``adaptopt.benchmark`` for what is measured and how.
"""
import sys

from adaptopt.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
