"""Start the ranks of a multi-process test on loopback, bounded in time."""

import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script, out, world=2, timeout=240, env=None, argv=()):
    """Run `world` ranks of tests/<script> (argv: out, *argv) with torch's
    env:// variables on 127.0.0.1; (exit codes, outputs).  Every rank is
    killed when the timeout passes (its exit code is then negative)."""
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                WORLD_SIZE=str(world), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
                **(env or {}))
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, script), str(out), *argv],
                              env=dict(base, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for r in range(world)]
    outs = []
    try:
        for p in procs:
            try:
                outs.append(p.communicate(timeout=timeout)[0].decode(errors="replace"))
            except subprocess.TimeoutExpired:
                outs.append(f"<killed after the {timeout} s timeout>")
                break
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [p.returncode for p in procs], outs


def multiprocess_enabled():
    """The multi-process tests (each starts 2-4 processes for 5-30 s) run when
    ADAPTOPT_DIST=1, as .ci/distributed.sh sets; the README suite skips them."""
    return os.environ.get("ADAPTOPT_DIST") == "1"


SKIP_REASON = ("multi-process test: set ADAPTOPT_DIST=1 to run it (.ci/distributed.sh does; "
               "the README suite stays fast)")
