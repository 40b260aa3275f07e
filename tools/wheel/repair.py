"""Repair a Linux wheel of adaptopt: auditwheel, then one OpenMP runtime.

    python tools/wheel/repair.py dist/adaptopt-*.whl -w wheelhouse/ [--libgomp PATH]

auditwheel grafts every external library into adaptopt.libs/ under a new,
hashed soname (libgomp-1a2b3c4d.so.1).  For libgomp that is the wrong
choice: a process that also imports torch (whose wheel bundles libgomp under
its own soname, libgomp.so.1) would then run two OpenMP runtimes with two
thread pools on the same cores, and threadpoolctl would have two pools to
limit.  So after auditwheel has computed the tag (from the symbol versions
of the extension *and* of the libgomp it grafted), this script puts the
libgomp back under its own soname, as an unmodified copy of the library
auditwheel grafted, and points the extension at it:

    adaptopt.libs/libgomp.so.1      byte for byte the grafted library
    adaptopt/_kernels*.so           NEEDED libgomp.so.1, RPATH $ORIGIN/../adaptopt.libs

The dynamic loader matches NEEDED entries by soname against the libraries
already loaded, so whichever of torch and adaptopt is imported first
provides libgomp.so.1 to the other: one runtime, one pool, in either order.
The copy in adaptopt.libs is found through the RPATH only when no
libgomp.so.1 is loaded yet (a machine without libgomp installed still works).

--libgomp picks the libgomp to graft (default: the one the loader finds).
The glibc it was linked against decides the tag: Debian 12's libgomp needs
GLIBC_2.34 (manylinux_2_34); the one of the manylinux_2_28 image
(GCC 8.5, AlmaLinux 8), which torch's manylinux_2_28 wheels bundle
byte for byte, needs GLIBC_2.17.  Needs auditwheel and patchelf >= 0.14.5.
"""
import argparse
import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kw)


def record_line(root, path):
    data = (root / path).read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [path.as_posix(), f"sha256={digest}", str(len(data))]


def rezip(root, dest):
    """Write the unpacked wheel at root to dest with a fresh RECORD."""
    record = next(root.glob("*.dist-info/RECORD"))
    files = sorted(p.relative_to(root) for p in root.rglob("*")
                   if p.is_file() and p != record)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for f in files:
        w.writerow(record_line(root, f))
    w.writerow([record.relative_to(root).as_posix(), "", ""])
    record.write_text(buf.getvalue())
    # dist-info last, as wheel tools write it
    order = sorted(files, key=lambda f: (f.parts[0].endswith(".dist-info"), f.as_posix()))
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in order + [record.relative_to(root)]:
            info = zipfile.ZipInfo(f.as_posix(), date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = ((root / f).stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, (root / f).read_bytes())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument("-w", "--wheel-dir", type=Path, default=Path("wheelhouse"))
    ap.add_argument("--libgomp", type=Path, help="the libgomp.so.1 to graft")
    ap.add_argument("--plat", default="auto", help="auditwheel's --plat")
    args = ap.parse_args(argv)
    args.wheel_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="adaptopt-repair-") as tmp:
        tmp = Path(tmp)
        env = None
        if args.libgomp:
            libdir = tmp / "libgomp"
            libdir.mkdir()
            shutil.copy2(args.libgomp, libdir / "libgomp.so.1")
            env = dict(os.environ)
            env["AUDITWHEEL_LD_LIBRARY_PATH"] = ":".join(
                [str(libdir)] + [p for p in [env.get("AUDITWHEEL_LD_LIBRARY_PATH")] if p])
        out = tmp / "repaired"
        run("auditwheel", "repair", "--plat", args.plat, "-w", out, args.wheel, env=env)
        (repaired,) = out.glob("*.whl")

        root = tmp / "unpacked"
        with zipfile.ZipFile(repaired) as z:
            z.extractall(root)
        grafted = sorted(root.glob("adaptopt.libs/libgomp-*.so*"))
        if grafted:
            (g,) = grafted
            # The original file: the same library before auditwheel patched
            # its soname (it may also have been padded by patchelf).
            original = args.libgomp or resolved_libgomp(args.wheel, tmp)
            if dynsyms(original) != dynsyms(g):
                sys.exit(f"repair.py: {g.name} is not a copy of {original}")
            g.unlink()
            shutil.copy2(original, root / "adaptopt.libs" / "libgomp.so.1")
            for ext in root.glob("adaptopt/_kernels*.so"):
                run("patchelf", "--replace-needed", g.name, "libgomp.so.1", ext)
            print(f"repair.py: {g.name} -> adaptopt.libs/libgomp.so.1 "
                  f"(unmodified copy of {original})")
        else:
            print("repair.py: no libgomp grafted (built without OpenMP?)")
        dest = args.wheel_dir / repaired.name
        rezip(root, dest)
    print(f"repair.py: wrote {dest}")
    return 0


def dynsyms(lib):
    """The library's dynamic symbols with their versions (the soname aside)."""
    out = run("objdump", "-T", lib, capture_output=True).stdout
    return sorted(tuple(line.split()[-2:]) for line in out.splitlines()
                  if " DF " in line or " DO " in line)


def resolved_libgomp(wheel, tmp):
    """The path the loader resolves libgomp.so.1 to for the unrepaired extension."""
    d = tmp / "orig"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(d)
    (ext,) = d.glob("adaptopt/_kernels*.so")
    env = dict(os.environ)
    extra = env.get("AUDITWHEEL_LD_LIBRARY_PATH")  # auditwheel searches it first
    if extra:
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (extra, env.get("LD_LIBRARY_PATH")) if p)
    out = run("ldd", ext, capture_output=True, env=env).stdout
    m = re.search(r"libgomp\.so\.1 => (\S+)", out)
    if not m:
        sys.exit(f"repair.py: cannot resolve libgomp.so.1 of {ext}:\n{out}")
    return Path(m.group(1)).resolve()


if __name__ == "__main__":
    raise SystemExit(main())
