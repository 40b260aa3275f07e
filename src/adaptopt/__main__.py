"""The command line: ``python -m adaptopt info | demo | bench`` (also ``adaptopt ...``).

* ``info``  -- how this adaptopt was built and how it runs (``--json``);
* ``demo``  -- the seeds' experiments on adaptopt's optimizers: tables on
  stdout, PNG plots in ``--out`` (matplotlib, optional);
* ``bench`` -- ``adaptopt.benchmark.main`` with the remaining arguments, or,
  where that module is missing, a small benchmark against the NumPy
  reference.

A mistake (an unknown name, a bad number, an unwritable directory) is one
line on stderr and exit code 2 (1 for failures at run time), never a
traceback; ``ADAPTOPT_DEBUG=1`` lets unexpected exceptions through.
"""

import argparse
import json
import os
import sys
import tempfile
import time

__all__ = ["main"]

PROG = "adaptopt"


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


def _prepare_out(out):
    """Create ``out`` if needed and check that files can be written there."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"cannot write plots to {out!r}: it exists and is not a directory",
                       f"{PROG} demo")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise CLIError(f"cannot write plots to {out!r}: {e.strerror or e}",
                       f"{PROG} demo") from None
    return os.path.abspath(out)


def cmd_demo(args):
    from . import demo

    names = args.only or list(demo.NAMES)
    plots, why_not = not args.no_plot, None
    if plots and not demo.have_matplotlib():
        plots, why_not = False, "matplotlib is not installed"
    out = _prepare_out(args.out) if plots else None

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
_BENCH = {  # name -> (class name, keyword arguments)
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "sgd": ("SGD", {"momentum": 0.9}),
}


def _fallback_parser():
    p = _Parser(prog=f"{PROG} bench", description=(
        "A small benchmark of each optimizer against the NumPy reference "
        "(adaptopt.benchmark, the full benchmark, is not available)."))
    p.add_argument("--size", type=_int_in(1), default=1_000_000,
                   help="elements per parameter array (default 1000000)")
    p.add_argument("--repeat", type=_int_in(1), default=10,
                   help="timed steps per optimizer; the fastest counts (default 10)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--optimizers", type=_names(tuple(_BENCH), "optimizer"),
                   default=list(_BENCH), metavar="NAMES",
                   help=f"comma-separated subset of {','.join(_BENCH)}")
    p.add_argument("--threads", type=_threads, default=None,
                   help="threads for adaptopt (default: adaptopt's; -1: all CPUs)")
    return p


def _best_step(opt, grads, repeat):
    opt.step(grads)      # state allocation and caches out of the timing
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        opt.step(grads)
        best = min(best, time.perf_counter() - t)
    return best


def _fallback_bench(argv, reason):
    import numpy as np

    import adaptopt
    from adaptopt import reference

    args = _fallback_parser().parse_args(argv)
    if args.threads is not None:
        try:
            n_threads = adaptopt._config.resolve_threads(args.threads, "--threads")
        except (TypeError, ValueError) as e:
            raise CLIError(str(e), f"{PROG} bench") from None
    else:
        n_threads = adaptopt.get_num_threads()
    print(f"adaptopt bench (built-in; {reason})")
    print(f"{args.size} x {args.dtype}, best of {args.repeat} steps, isa {adaptopt.get_isa()}, "
          f"{n_threads} thread(s)")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(args.size).astype(args.dtype)
    g = [rng.standard_normal(args.size).astype(args.dtype)]
    rows = []
    for name in args.optimizers:
        cls_name, kw = _BENCH[name]
        fast = getattr(adaptopt, cls_name)([p0.copy()], n_threads=n_threads, **kw)
        ref = getattr(reference, cls_name)([p0.copy()], **kw)
        t_fast, t_ref = _best_step(fast, g, args.repeat), _best_step(ref, g, args.repeat)
        rows.append((cls_name + (" (momentum 0.9)" if kw else ""),
                     f"{t_fast / args.size * 1e9:.3f}", f"{t_ref / args.size * 1e9:.3f}",
                     f"{t_ref / t_fast:.1f}x"))
    headers = ("optimizer", "adaptopt ns/elem", "NumPy ns/elem", "speedup")
    widths = [max(len(r[i]) for r in (headers, *rows)) for i in range(4)]
    for r in (headers, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))
    return 0


def cmd_bench(argv):
    import importlib
    try:
        benchmark = importlib.import_module("adaptopt.benchmark")
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and e.name == "adaptopt.benchmark"
        reason = ("adaptopt.benchmark is not installed" if missing
                  else f"adaptopt.benchmark could not be imported: {_one_line(e)}")
        return _fallback_bench(argv, reason)
    rc = benchmark.main(list(argv))
    return 0 if rc is None else int(rc)


# --- main -------------------------------------------------------------------
def _parser():
    import adaptopt
    p = _Parser(prog=PROG, description="adaptopt: fused, exactly specified adaptive "
                "optimizers. Build information, the seeds' experiments, benchmarks.")
    p.add_argument("--version", action="version", version=f"adaptopt {adaptopt.__version__}")
    sub = p.add_subparsers(dest="command", metavar="{info,demo,bench}")

    info = sub.add_parser("info", help="how adaptopt was built and runs here",
                          description="Version, build (compiler, flags, OpenMP), threads, "
                          "SIMD path in use and available, NumPy version.")
    info.add_argument("--json", action="store_true", help="as JSON (adaptopt.show_config's dict)")

    from .demo import NAMES
    demo = sub.add_parser("demo", help="the seeds' experiments: tables and PNG plots",
                          description="Rerun the tutorials' experiments (linear regression, "
                          "the seeds' own NumPy rules, the 1-D quadratic, five pitfalls) on "
                          "adaptopt's optimizers; print tables, write PNG plots.")
    demo.add_argument("--out", default="adaptopt-demo", metavar="DIR",
                      help="directory for the PNG plots (default ./adaptopt-demo/)")
    demo.add_argument("--quick", action="store_true",
                      help="fewer epochs and steps: seconds instead of tens of seconds")
    demo.add_argument("--no-plot", action="store_true", help="tables only, write nothing")
    demo.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=42,
                      help="seed of the data and shuffles (default 42, the tutorial's)")
    demo.add_argument("--only", type=_names(NAMES, "experiment"), metavar="NAMES",
                      help=f"comma-separated subset of: {', '.join(NAMES)}")

    sub.add_parser("bench", add_help=False, help="benchmarks (arguments go to "
                   "adaptopt.benchmark; 'adaptopt bench --help')")
    return p


def _one_line(text):
    return " ".join(str(text).split())


def main(argv=None):
    """Run the command line; the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] == "bench":
            return cmd_bench(argv[1:])
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return {"info": cmd_info, "demo": cmd_demo}[args.command](args)
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
