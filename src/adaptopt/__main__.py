"""The command line: ``python -m adaptopt info | demo | bench`` (also ``adaptopt ...``).

* ``info``  -- how this adaptopt was built and how it runs (``--json``);
* ``demo``  -- the experiments of the tutorials this project grew from, on
  adaptopt's optimizers: tables on stdout, PNG plots in ``--out``
  (matplotlib, optional);
* ``bench`` -- ``adaptopt.bench()``: each optimizer against its NumPy
  reference at a few sizes.

A mistake (an unknown name, a bad number, an unwritable directory) is one
line on stderr and exit code 2 (1 for failures at run time), never a
traceback; ``ADAPTOPT_DEBUG=1`` lets unexpected exceptions through.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence

__all__ = ["main"]

PROG = "adaptopt"
DEFAULT_OUT = "adaptopt-demo"


class CLIError(Exception):
    """A mistake of the user's: one line ``PROG: error: MESSAGE``, exit code ``code``."""

    def __init__(self, message, prog=PROG, code=2):
        super().__init__(message)
        self.prog, self.code = prog, code


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage dump) via CLIError."""

    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')", self.prog)


def _int_in(lo, hi=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    return parse


def _threads(text):
    value = _int_in(-2**31)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must not be 0 (omit it for the default, "
                                         "-1 for all CPUs)")
    return value


def _names(known, what):
    """A comma-separated subset of ``known`` (a sequence of names)."""
    def parse(text):
        names = [n.strip().lower() for n in text.split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"expected one or more {what} names")
        for n in names:
            if n not in known:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {n!r} (known: {', '.join(known)})")
        return list(dict.fromkeys(names))
    return parse


def _say(text=""):
    """Print to stdout without breaking a progress bar on stderr."""
    bar = _say.bar
    if bar is not None and not bar.disable:
        bar.write(text, file=sys.stdout)
    else:
        print(text, flush=True)


_say.bar = None


# --- info -------------------------------------------------------------------
_FLAG_KEYS = ("flags", "c_flags", "cflags", "compile_flags", "compiler_flags")


def cmd_info(args):
    import adaptopt
    from adaptopt._config import format_thresholds
    cfg = adaptopt.show_config(mode="dicts")
    if args.json:
        print(json.dumps(cfg, indent=2, default=str))
        return 0
    flags = next((cfg[k] for k in _FLAG_KEYS if cfg.get(k)), None)
    if isinstance(flags, (list, tuple)):
        flags = " ".join(flags)

    def names(key):
        v = cfg.get(key)
        return ", ".join(v) if isinstance(v, (list, tuple)) else str(v)

    rows = [
        ("version", cfg.get("version", adaptopt.__version__)),
        ("compiler", cfg.get("compiler", "unknown")),
        ("flags", flags or "not recorded by this build"),
        ("OpenMP", "yes" if cfg.get("openmp") else "no (single-threaded build)"),
        ("threads", f"{cfg.get('num_threads')}" + (
            f" (parallel from: {format_thresholds(cfg['parallel_threshold'])};"
            " float32/float64 elements)"
            if "parallel_threshold" in cfg else "")),
        ("SIMD in use", cfg.get("isa")),
        ("SIMD available", names("isa_available") + (
            f" (compiled: {names('isa_compiled')})" if "isa_compiled" in cfg else "")),
        ("NumPy", cfg.get("numpy")),
        ("Python", cfg.get("python", sys.version.split()[0])),
        ("platform", cfg.get("platform")),
    ]
    shown = {"version", "compiler", "openmp", "num_threads", "parallel_threshold", "isa",
             "isa_available", "isa_compiled", "numpy", "python", "platform", *_FLAG_KEYS}
    rows += [(k, names(k)) for k in cfg if k not in shown]   # whatever else it reports
    width = max(len(k) for k, _ in rows)
    print(f"adaptopt {cfg.get('version', adaptopt.__version__)}")
    for k, v in rows[1:]:
        print(f"  {k:<{width}}  {v}")
    return 0


# --- demo -------------------------------------------------------------------
def _progress(total):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # disable=None: a bar on a terminal, nothing when stderr is a file or pipe
    return tqdm(total=total, desc="adaptopt demo", unit="experiment", disable=None,
                leave=False, file=sys.stderr)


def _check_out(out, create):
    """Check that plots can be written to the directory ``out``; create it if ``create``.

    Without ``create`` nothing is made: ``out`` must be a directory already,
    or its nearest existing ancestor a directory this process may write in.
    """
    def refuse(why):
        return CLIError(f"cannot write plots to {out!r}: {why}", f"{PROG} demo")

    if os.path.exists(out) and not os.path.isdir(out):
        raise refuse("it exists and is not a directory")
    if not create:
        parent = os.path.abspath(out)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise refuse(f"{parent!r} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise refuse(f"{parent!r} is not writable")
        return os.path.abspath(out)
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise refuse(e.strerror or e) from None
    return os.path.abspath(out)


def cmd_demo(args):
    from . import demo

    names = args.only or list(demo.NAMES)
    plots, why_not = not args.no_plot, None
    if plots and not demo.have_matplotlib():
        plots, why_not = False, "matplotlib is not installed"
    # An --out given on the command line must be usable whether or not plots are
    # made (a mistake is reported now, not on the run that has matplotlib); it is
    # only created when plots are written into it.  The default is checked only then.
    out = args.out if args.out is not None else DEFAULT_OUT
    if plots or args.out is not None:
        out = _check_out(out, create=plots)

    mode = "quick mode" if args.quick else "full"
    print(f"adaptopt demo: {len(names)} experiment(s), {mode}, seed {args.seed}", flush=True)
    bar = _say.bar = _progress(len(names))
    written = []
    try:
        for name in names:
            number, title, _ = demo.EXPERIMENTS[name]
            if bar is not None:
                bar.set_postfix_str(name)
            result = demo.run(name, quick=args.quick, seed=args.seed)
            _say(f"\n== {number}. {title} ==")
            for table in demo.tables(name, result):
                _say(str(table))
                _say()
            if plots:
                path = demo.plot(name, result, out)
                written.append(path)
                _say(f"plot: {path}")
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
        _say.bar = None
    print()
    if plots:
        print(f"{len(written)} plot(s) written to {out}{os.sep}")
    elif why_not:
        print(f"{why_not}, so no plots were made; for the plots: {demo.MISSING_HINT}")
    return 0


# --- bench ------------------------------------------------------------------
def _sizes(text):
    from ._bench import parse_size
    try:
        sizes = [parse_size(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not sizes:
        raise argparse.ArgumentTypeError("expected one or more sizes, e.g. 4K,64K,1M")
    return sizes


def cmd_bench(args):
    from ._bench import bench
    records = bench(sizes=args.sizes, dtype=args.dtype, optimizers=args.optimizers,
                    repeat=args.repeat, n_threads=args.threads)
    if args.json:
        import adaptopt
        meta = {"adaptopt": adaptopt.show_config(mode="dicts"), "argv": sys.argv[1:]}
        try:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "records": records}, f, indent=1, default=str)
        except OSError as e:
            raise CLIError(f"cannot write {args.json!r}: {e.strerror or e}",
                           f"{PROG} bench", code=1) from None
        print(f"wrote {len(records)} records to {args.json}")
    return 0


# --- main -------------------------------------------------------------------
def _parser():
    import adaptopt

    from ._bench import DEFAULT_SIZES, OPTIMIZERS, _label
    from .demo import NAMES, TUTORIALS
    titles = " and ".join(f'"{t}"' for t in TUTORIALS)
    p = _Parser(prog=PROG, description="adaptopt: fused, exactly specified adaptive "
                "optimizers. Build information, the experiments of the tutorials this "
                f"project grew from ({titles}), a benchmark.")
    p.add_argument("--version", action="version", version=f"adaptopt {adaptopt.__version__}")
    sub = p.add_subparsers(dest="command", metavar="{info,demo,bench}")

    info = sub.add_parser("info", help="how adaptopt was built and runs here",
                          description="Version, build (compiler, flags, OpenMP), threads, "
                          "SIMD path in use and available, NumPy version.")
    info.add_argument("--json", action="store_true", help="as JSON (adaptopt.show_config's dict)")

    demo = sub.add_parser(
        "demo", help="the tutorials' experiments on adaptopt: tables and PNG plots",
        description=f"Rerun the experiments of the tutorials {titles} on adaptopt's "
        "optimizers: mini-batch linear regression, the tutorial's own NumPy update rules "
        "next to adaptopt, the 1-D quadratic, five pitfalls. Prints tables; writes one PNG "
        'plot each when matplotlib is installed (pip install "adaptopt[plot]").')
    demo.add_argument("--out", metavar="DIR",
                      help=f"directory for the PNG plots, created if missing (default "
                      f"./{DEFAULT_OUT}/); checked even when no plots are made")
    demo.add_argument("--quick", action="store_true",
                      help="fewer epochs and steps: seconds instead of tens of seconds")
    demo.add_argument("--no-plot", action="store_true", help="tables only, write nothing")
    demo.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=42,
                      help="seed of the data and shuffles (default 42, the tutorial's)")
    demo.add_argument("--only", type=_names(NAMES, "experiment"), metavar="NAMES",
                      help=f"comma-separated subset of: {', '.join(NAMES)}")

    default_sizes = ",".join(_label(n) for n in DEFAULT_SIZES)
    bench = sub.add_parser(
        "bench", help="time each optimizer against its NumPy reference",
        description="One optimizer step, adaptopt against its own NumPy reference "
        "(adaptopt.reference), at a few sizes; the fastest of --repeat steps counts. "
        "The same as adaptopt.bench(). The peer suite (torch.optim, DeepSpeed, the memory "
        "roofline, plots) is bench/suite.py in the source repository.")
    bench.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), metavar="SIZES",
                       help=f"comma-separated elements per array, K = 1024, M = 1024^2 "
                       f"(default {default_sizes})")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="default float32")
    bench.add_argument("--optimizers", type=_names(tuple(OPTIMIZERS), "optimizer"),
                       default=None, metavar="NAMES",
                       help=f"comma-separated subset of {','.join(OPTIMIZERS)} (default all; "
                       "sgd with momentum 0.9)")
    bench.add_argument("--repeat", type=_int_in(1), default=20,
                       help="timed steps per optimizer and size; the fastest counts (default 20)")
    bench.add_argument("--threads", type=_threads, default=None,
                       help="threads for adaptopt (default: adaptopt's; -1: all CPUs)")
    bench.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    return p


def _one_line(text):
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``python -m adaptopt``, ``adaptopt``) and return its exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a usage mistake (one line on stderr), 1 for a
        failure at run time, 130 when interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return {"info": cmd_info, "demo": cmd_demo, "bench": cmd_bench}[args.command](args)
    except CLIError as e:
        print(_one_line(f"{e.prog}: error: {e}"), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (``| head``): quiet, like other command-line tools
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except Exception as e:  # never a traceback, unless asked for
        if os.environ.get("ADAPTOPT_DEBUG"):
            raise
        print(_one_line(f"{PROG}: error: {type(e).__name__}: {e} "
                        "(set ADAPTOPT_DEBUG=1 for the traceback)"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
