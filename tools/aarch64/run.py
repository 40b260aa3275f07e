"""Run adaptopt's kernels compiled for aarch64 under qemu-user, bit for bit
against the same kernels compiled for the host (x86-64).

The x86-64 scalar kernels equal the NumPy reference bit for bit
(tests/test_parity.py); this extends that to aarch64 without an aarch64
machine.  harness.c drives the public C API (dispatch.c + the scalar
kernels, with the flags CMakeLists.txt gives them, read from it as
tools/avx512_bochs/run.py does) on raw input files; this script

  1. builds the harness twice: gcc for the host, aarch64-linux-gnu-gcc
     (static) for aarch64;
  2. asks the harness which algorithms, buffer and scalar counts and flag
     values the C API has (``harness describe``: adaptopt_get_algo_info,
     and adaptopt_step itself for the flags), so no table here can drift
     from the C code;
  3. writes inputs for every algorithm, dtype and accepted flag value, sizes
     around the vector widths (NEON: 4 floats / 2 doubles; SVE up to 64 /
     32; unrolled loops) with unaligned starts, values over many
     magnitudes (zeros, -0, subnormals, 1e30, inf, NaN) and four sets of
     per-step scalars (below and above 0.5, exactly 1 in alternate
     positions, which select the kernels' special paths);
  4. runs the host build natively and the aarch64 build under qemu, and
     compares every output buffer bit for bit.  NaN payloads are the one
     allowed difference (x86 and Arm make different default NaNs; the
     spec does not fix NaN bits): counted and printed, never a pass of a
     number against a NaN;
  5. with adaptopt importable, also checks the host harness against the
     installed extension's scalar kernels on the same inputs.

    python tools/aarch64/run.py          # exit 0 and AARCH64-PASS when equal
    python tools/aarch64/run.py --fma    # control: aarch64 kernels built with
                                         # FMA contraction; must AARCH64-FAIL

Needs gcc, Debian's gcc-aarch64-linux-gnu (with libc6-dev-arm64-cross) and
qemu-user-static (or qemu-user).  About 30 seconds.
"""
import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# the kernels' flags, read from CMakeLists.txt as the AVX-512 emulator check reads them
cmake_flags = _load(HERE.parent / "avx512_bochs" / "run.py", "adaptopt_avx512_bochs_run").cmake_flags

CROSS = "aarch64-linux-gnu-gcc"
OBJDUMP = "aarch64-linux-gnu-objdump"
QEMUS = ("qemu-aarch64-static", "qemu-aarch64")
SIZES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65,
         127, 128, 129, 1000]
N_VARIANTS = 4
DTYPES = {0: np.float32, 1: np.float64}
UINT = {0: np.uint32, 1: np.uint64}


def qemu():
    return next((q for q in QEMUS if shutil.which(q)), None)


def missing():
    """What this machine lacks to run the check (empty: nothing)."""
    lack = [t for t in ("gcc", CROSS) if shutil.which(t) is None]
    if qemu() is None:
        lack.append(" or ".join(QEMUS))
    if shutil.which(CROSS) and not Path(subprocess.run(
            [CROSS, "-print-file-name=libc.a"], capture_output=True, text=True).stdout.strip()).is_file():
        lack.append("libc.a for aarch64 (libc6-dev-arm64-cross)")
    return lack


def build(work, cc, name, fma=False, extra=()):
    common, _ = cmake_flags()
    if fma:
        common = [f for f in common if not f.startswith("-ffp-contract")] + ["-ffp-contract=fast"]
    inc = f"-I{ROOT / 'csrc'}"
    objs = []
    for src in ("dispatch.c", "kernels_scalar.c"):
        o = work / f"{name}-{src[:-2]}.o"
        subprocess.run([cc, *common, "-std=gnu99", inc, "-c", str(ROOT / "csrc" / src), "-o", str(o)],
                       check=True)
        objs.append(str(o))
    exe = work / name
    subprocess.run([cc, "-O2", "-std=c99", "-D_POSIX_C_SOURCE=200112L", inc, *extra,
                    str(HERE / "harness.c"), *objs, "-lm", "-o", str(exe)], check=True)
    return exe


def describe(cmd):
    """{algo: (name, nbuf, nscal, [flags])} from the harness: the C API's
    registry, and the flag values adaptopt_step accepts."""
    out = subprocess.run([*cmd, "describe"], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    algos = {}
    for line in out.split("\n"):
        if line.strip():
            a, name, nbuf, nscal, *flags = line.split()
            algos[int(a)] = (name, int(nbuf), int(nscal), [int(f) for f in flags])
    return algos


def values(rng, n, dtype, nonneg):
    """Many magnitudes, zeros of both signs, subnormals, huge, inf, NaN."""
    v = rng.uniform(0.001, 1.0, n) * 2.0 ** rng.integers(-20, 21, n)
    kind = rng.integers(0, 32, n)
    v[kind == 0] = 0.0
    v[kind == 1] = -0.0
    v[kind == 2] = 1e-40            # float32 subnormal
    v[kind == 3] = 1e-310           # float64 subnormal
    v[kind == 4] = 1e30
    v[kind == 5] = np.inf
    v[kind == 6] = np.nan
    if not nonneg:
        v[rng.random(n) < 0.5] *= -1
    with np.errstate(over="ignore"):
        return v.astype(dtype)


def scalars(rng, nscal, variant):
    if variant == 0:
        s = rng.uniform(0.001, 0.49, nscal)
    elif variant == 1:
        s = rng.uniform(0.5, 0.999, nscal)
    else:  # exactly 1 at every other position, log-uniform elsewhere
        s = 10.0 ** rng.uniform(-10, 0, nscal)
        s[variant % 2::2] = 1.0
    s[-1:] *= -1  # the last scalar is a negative step size in every algorithm
    return s


def cases(algos, seed=0):
    """Yield (header, scal, buffers) for every algo, dtype, flag value,
    variant and size."""
    rng = np.random.default_rng(seed)
    for algo, (_, nbuf, nscal, flags) in sorted(algos.items()):
        for dt in DTYPES:
            for f in flags:
                for var in range(N_VARIANTS):
                    scal = scalars(rng, nscal, var)
                    off = var % 3
                    for n in SIZES:
                        # state non-negative (as v, sum, square_avg are) in
                        # half the variants, any sign in the others
                        bufs = [values(rng, n, DTYPES[dt], nonneg=(k >= 2 and var % 2 == 0))
                                for k in range(nbuf)]
                        yield (algo, dt, f, nbuf, nscal, n, off), scal, bufs


def write_input(path, algos):
    meta = []
    with open(path, "wb") as fh:
        for (algo, dt, f, nbuf, nscal, n, off), scal, bufs in cases(algos):
            fh.write(np.array([algo, dt, f, nbuf, nscal], "<i4").tobytes())
            fh.write(np.array([n, off], "<u8").tobytes())
            fh.write(np.asarray(scal, "<f8").tobytes())
            for b in bufs:
                fh.write(b.astype(b.dtype.newbyteorder("<")).tobytes())
            meta.append((algo, dt, f, nbuf, n, off, scal, bufs))
    return meta


def split_output(path, meta):
    data = Path(path).read_bytes()
    pos, out = 0, []
    for _algo, dt, _f, nbuf, n, _off, _scal, _bufs in meta:
        es = np.dtype(DTYPES[dt]).itemsize
        case = []
        for _ in range(nbuf):
            case.append(np.frombuffer(data, DTYPES[dt], n, pos).copy())
            pos += n * es
        out.append(case)
    if pos != len(data):
        raise SystemExit(f"output has {len(data)} bytes, expected {pos}")
    return out


def compare(a_out, b_out, meta, what, names):
    """(buffers compared, mismatching buffers, NaN-payload-only buffers)."""
    checked = bad = nan_only = 0
    for (algo, dt, f, _nbuf, n, off, _, _), a_case, b_case in zip(meta, a_out, b_out):
        for k, (a, b) in enumerate(zip(a_case, b_case)):
            checked += 1
            ua, ub = a.view(UINT[dt]), b.view(UINT[dt])
            diff = ua != ub
            if not diff.any():
                continue
            both_nan = np.isnan(a) & np.isnan(b)
            if not (diff & ~both_nan).any():
                nan_only += 1
                continue
            bad += 1
            if bad <= 20:
                j = int(np.flatnonzero(diff & ~both_nan)[0])
                print(f"MISMATCH {what}: {names.get(algo, algo)} {np.dtype(DTYPES[dt]).name} "
                      f"flags {f} n {n} off {off} buffer {k} element {j}: "
                      f"{a[j]!r} ({ua[j]:#x}) vs {b[j]!r} ({ub[j]:#x})")
    return checked, bad, nan_only


def installed_outputs(meta):
    """The same cases through the installed adaptopt's scalar kernels."""
    try:
        import adaptopt
        from adaptopt import _kernels
    except ImportError:
        return None
    before = adaptopt.get_isa()
    adaptopt.set_isa("scalar")
    try:
        out = []
        for algo, dt, f, nbuf, n, off, scal, bufs in meta:
            work = [np.concatenate([np.zeros(off, b.dtype), b]) for b in bufs]
            views = [w[off:] for w in work]
            ptr = np.array([v.ctypes.data for v in views], np.uint64)
            rc = _kernels.step(algo, dt, ptr, nbuf, np.array([0, n], np.uintp), list(scal), f, 1)
            if rc != _kernels.OK:
                raise SystemExit(f"installed adaptopt: step returned {rc}")
            out.append([v.copy() for v in views])
        return out
    finally:
        adaptopt.set_isa(before)


def disassembly_report(obj):
    """What the compiler made of the aarch64 kernels: NEON vector or scalar
    floating point, and whether any multiply-add was fused."""
    if shutil.which(OBJDUMP) is None:
        return f"({OBJDUMP} not found: no disassembly report)"
    asm = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(obj)], capture_output=True,
                         text=True, check=True).stdout
    count = lambda pat: len(re.findall(pat, asm))
    vec = {op: count(rf"\t{op}\tv\d+\.(?:4s|2d)") for op in ("fadd", "fsub", "fmul", "fdiv", "fsqrt")}
    sca = {op: count(rf"\t{op}\t[sd]\d+,") for op in ("fadd", "fsub", "fmul", "fdiv", "fsqrt")}
    fused = count(r"\t(?:fmla|fmls|fmadd|fmsub|fnmadd|fnmsub)\t")
    sve = count(r"\tz\d+\.[sd]")
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())
    return (f"aarch64 kernels: NEON vector (.4s/.2d): {fmt(vec)}; scalar: {fmt(sca)}; "
            f"fused multiply-add: {fused}; SVE: {sve}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fma", action="store_true",
                    help="control run: let the aarch64 kernels contract to FMA (must FAIL)")
    args = ap.parse_args(argv)
    lacking = missing()
    if lacking:
        print("cannot run: missing " + ", ".join(lacking), file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="adaptopt-aarch64-") as tmp:
        work = Path(tmp)
        host = build(work, "gcc", "host")
        arm = build(work, CROSS, "aarch64", fma=args.fma, extra=["-static"])
        qemu_cmd = [qemu(), str(arm)]
        algos = describe([str(host)])
        arm_algos = describe(qemu_cmd)
        if algos != arm_algos:
            print(f"AARCH64-FAIL: the two builds describe different APIs:\n{algos}\n{arm_algos}")
            return 1
        names = {a: info[0] for a, info in algos.items()}
        print("algorithms (from the C API): " + "; ".join(
            f"{name}: {nb} buffers, {ns} scalars, {len(fl)} flag values"
            for a, (name, nb, ns, fl) in sorted(algos.items())))
        print(disassembly_report(work / "aarch64-kernels_scalar.o"))
        meta = write_input(work / "in.bin", algos)
        r = subprocess.run([str(host), "run", str(work / "in.bin"), str(work / "host.bin")],
                           capture_output=True, text=True, timeout=300)
        print(r.stdout.strip(), r.stderr.strip())
        r2 = subprocess.run([*qemu_cmd, "run", str(work / "in.bin"), str(work / "arm.bin")],
                            capture_output=True, text=True, timeout=600)
        print(r2.stdout.strip(), r2.stderr.strip())
        if r.returncode or r2.returncode:
            print("AARCH64-FAIL: a harness failed")
            return 1
        host_out = split_output(work / "host.bin", meta)
        arm_out = split_output(work / "arm.bin", meta)
        checked, bad, nan_only = compare(host_out, arm_out, meta, "x86-64 vs aarch64", names)
        print(f"aarch64: {len(meta)} cases, {checked} buffers compared, {bad} mismatches "
              f"({nan_only} differ only in NaN payloads)")
        inst = installed_outputs(meta)
        if inst is None:
            print("installed adaptopt: not importable, host harness not cross-checked")
        else:
            c2, bad2, nan2 = compare(host_out, inst, meta, "host harness vs installed adaptopt", names)
            print(f"installed adaptopt (scalar kernels): {c2} buffers compared, {bad2} mismatches "
                  f"({nan2} NaN payloads)")
            bad += bad2 + nan2  # same machine, same code: even NaN bits must agree
    print("AARCH64-FAIL" if bad else "AARCH64-PASS")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
