"""Run adaptopt's AVX-512 kernels on an emulated AVX-512 CPU, bit for bit
against its scalar kernels.

A CPU without AVX-512 (the 2-core test machine is one) compiles the avx512
path but can never execute it.  bochs emulates one (its Tiger Lake model).
Linux does not boot with AVX-512 on bochs 2.7 (the kernel rejects the XSAVE
area size bochs reports and turns XSAVE off), so the check runs bare metal:
ISOLINUX's mboot.c32 loads kmain.c + boot.S as a multiboot image, boot.S
enters long mode and enables the AVX-512 state, kmain.c runs every kernel of
both tables on the same inputs and prints AVX512-PASS or AVX512-FAIL on the
serial port.  The kernels are compiled with the flags CMakeLists.txt gives
them (read from it), plus flags any freestanding program needs.

    python tools/avx512_bochs/run.py          # exit 0 on AVX512-PASS
    python tools/avx512_bochs/run.py --fma    # control: FMA contraction allowed
                                              # in the avx512 kernels; must FAIL

Needs gcc, ld and objcopy, and Debian's bochs, bochs-term (or another GUI
package bochs depends on), bochsbios, vgabios, isolinux,
syslinux-common and genisoimage.  About a minute.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOOLS = ["gcc", "ld", "objcopy", "bochs", "genisoimage"]
FILES = ["/usr/lib/ISOLINUX/isolinux.bin", "/usr/share/bochs/BIOS-bochs-latest",
         "/usr/share/bochs/VGABIOS-lgpl-latest"] + [
    f"/usr/lib/syslinux/modules/bios/{m}.c32" for m in ("ldlinux", "mboot", "libcom32", "libutil")]
FREESTANDING = ["-fno-pie", "-fno-pic", "-mno-red-zone", "-fno-stack-protector",
                "-fno-asynchronous-unwind-tables"]


def missing():
    """What this machine lacks to run the check (empty: nothing)."""
    return ([t for t in TOOLS if shutil.which(t) is None]
            + [f for f in FILES if not Path(f).exists()])


def cmake_flags():
    """(flags of every kernel, extra flags of the avx512 kernels) from CMakeLists.txt."""
    text = (ROOT / "CMakeLists.txt").read_text()
    common = re.search(r"else\(\)\s*set\(ADAPTOPT_C_FLAGS ([^)]*)\)", text).group(1).split()
    avx512 = re.search(r"kernels_avx512\.c PROPERTIES COMPILE_OPTIONS\s*\"([^\"]*)\"", text)
    return common, avx512.group(1).split(";")


def build(work, fma):
    common, avx512 = cmake_flags()
    if fma:
        common = [f for f in common if not f.startswith("-ffp-contract")] + ["-ffp-contract=fast"]
    cc = ["gcc", *common, *FREESTANDING, f"-I{ROOT / 'csrc'}", "-c"]
    run = lambda *cmd: subprocess.run(cmd, check=True, cwd=work)
    run(*cc, str(ROOT / "csrc/kernels_scalar.c"), "-o", "scalar.o")
    run(*cc, *avx512, str(ROOT / "csrc/kernels_avx512.c"), "-o", "avx512.o")
    run(*cc, "-ffreestanding", str(HERE / "kmain.c"), "-o", "kmain.o")
    run("gcc", "-c", str(HERE / "boot.S"), "-o", "boot.o")
    run("ld", "-static", "-nostdlib", "-no-pie", "--no-warn-rwx-segments",
        "-T", str(HERE / "link.ld"), "-o", "test.elf", "boot.o", "kmain.o", "scalar.o", "avx512.o")
    iso = work / "iso"
    (iso / "isolinux").mkdir(parents=True)
    run("objcopy", "-O", "binary", "-R", ".bss", "test.elf", str(iso / "test.bin"))
    for f in FILES:
        if f.endswith((".bin", ".c32")):
            shutil.copy(f, iso / "isolinux")
    (iso / "isolinux/isolinux.cfg").write_text(
        "SERIAL 0 115200\nDEFAULT t\nPROMPT 0\nTIMEOUT 0\nLABEL t\n"
        "  KERNEL mboot.c32\n  APPEND /test.bin\n")
    run("genisoimage", "-quiet", "-o", "t.iso", "-b", "isolinux/isolinux.bin", "-c",
        "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "-J", "-R", "iso")
    (work / "bochsrc").write_text(f"""megs: 512
cpu: model=tigerlake, count=1, ips=400000000
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
ata0-master: type=cdrom, path={work / 't.iso'}, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev={work / 'serial.txt'}
display_library: rfb, options="timeout=0"
log: {work / 'bochs.log'}
clock: sync=none
speaker: enabled=0
""")


def boot(work, timeout):
    """Boot the image; the serial output once a verdict is printed (or at timeout)."""
    serial = work / "serial.txt"
    # Debian's bochs starts in its debugger: "c" continues; stdin stays open.
    proc = subprocess.Popen(["bochs", "-q", "-f", str(work / "bochsrc")], cwd=work,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    proc.stdin.write("c\n")
    proc.stdin.flush()
    deadline = time.monotonic() + timeout
    text = ""
    try:
        while time.monotonic() < deadline:
            text = serial.read_text(errors="replace") if serial.exists() else ""
            if re.search(r"AVX512-(PASS|FAIL|UNAVAILABLE)", text) or proc.poll() is not None:
                time.sleep(0.5)
                return serial.read_text(errors="replace") if serial.exists() else text
            time.sleep(1)
        return text + "\n(timed out)\n"
    finally:
        proc.kill()
        proc.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fma", action="store_true",
                    help="control run: let the avx512 kernels contract to FMA (must FAIL)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the emulated run")
    args = ap.parse_args(argv)
    lacking = missing()
    if lacking:
        print("cannot run: missing " + ", ".join(lacking), file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="adaptopt-avx512-") as tmp:
        work = Path(tmp)
        build(work, args.fma)
        out = boot(work, args.timeout)
    print(out.strip())
    return 0 if "AVX512-PASS" in out else 1


if __name__ == "__main__":
    raise SystemExit(main())
