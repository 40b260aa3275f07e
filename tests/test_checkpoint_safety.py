"""Hostile checkpoint files and hostile save targets (issue 11).

Loading: a non-regular path never blocks, forged metadata and npy headers
raise ValueError before any large allocation.  Saving: killed saves do not
accumulate temp files, symlinks are followed, the mode is np.save's."""
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import assert_bitwise, run_isolated

import adaptopt
from adaptopt import _checkpoint

INVALID = "is not a valid adaptopt checkpoint"


def small_opt(n=10):
    p = np.arange(n, dtype=np.float32)
    opt = adaptopt.Adam([p], lr=0.01)
    opt.step([np.ones(n, np.float32)])
    return p, opt


def members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_zip(path, items, compress=None):
    """items: name -> bytes; compress: names to deflate."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in items.items():
            zf.writestr(name, data, zipfile.ZIP_DEFLATED if name in (compress or ()) else
                        zipfile.ZIP_STORED)


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npy_header(shape, dtype):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
              "fortran_order": False, "shape": shape})
    return buf.getvalue()


def meta_bytes(text):
    return npy_bytes(np.array(text))


def assert_rejected_unchanged(opt, path, match=INVALID, peak_limit=64 << 20):
    """load(path) raises ValueError(match), allocates less than peak_limit,
    and leaves the optimizer's state as it was."""
    before = opt.state_dict()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            opt.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < peak_limit, f"load allocated {peak} bytes before rejecting the file"
    after = opt.state_dict()
    for k, v in before["state"][0].items():
        if isinstance(v, np.ndarray):
            assert_bitwise(after["state"][0][k], v, k)
        else:
            assert after["state"][0][k] == v


# --- loading: non-regular files
def _load_in_child(path, timeout=20):
    return run_isolated(f"""
        import numpy as np, adaptopt
        opt = adaptopt.Adam([np.zeros(10, np.float32)])
        try:
            opt.load({str(path)!r})
        except ValueError as e:
            print("ValueError:", e)
        """, timeout=timeout)


def test_fifo_as_load_path_raises_at_once(tmp_path):
    fifo = tmp_path / "ckpt.npz"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    r = _load_in_child(fifo)  # in a child: a hang is a timeout failure, not a stuck pytest
    assert "ValueError:" in r.stdout and "not a regular file (a FIFO)" in r.stdout, r.stdout
    assert time.monotonic() - t0 < 20


def test_directory_device_and_socket_as_load_path_raise(tmp_path):
    sock_path = tmp_path / "s.npz"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_path))
        for path, kind in ((tmp_path, "a directory"), ("/dev/zero", "a character device"),
                           (sock_path, "a socket")):
            r = _load_in_child(path)
            assert f"not a regular file ({kind})" in r.stdout, (path, r.stdout)
    finally:
        s.close()


def test_symlink_to_fifo_as_load_path_raises(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", tmp_path / "link.npz")
    r = _load_in_child(tmp_path / "link.npz")
    assert "not a regular file (a FIFO)" in r.stdout, r.stdout


# --- loading: forged metadata
def test_deeply_nested_metadata_raises_valueerror_not_recursionerror(tmp_path):
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    for depth in (40, 10_000, 200_000):
        nested = "[" * depth + "]" * depth
        items["__meta__.npy"] = meta_bytes(nested)
        write_zip(tmp_path / "deep.npz", items)
        assert_rejected_unchanged(opt, tmp_path / "deep.npz", match="nests")
    # nesting inside a valid header: a schedule nested 10_000 deep
    meta = json.loads(str(np.load(tmp_path / "ok.npz")["__meta__"]))
    inner = {"kind": "constant", "lr": 0.1}
    text = json.dumps(meta).replace('"lr": 0.01', '"lr": ' + '{"kind": "linear_warmup", "inner": ' * 10_000
                                    + json.dumps(inner) + "}" * 10_000)
    assert len(text) > 10_000
    items["__meta__.npy"] = meta_bytes(text)
    write_zip(tmp_path / "deep2.npz", items)
    assert_rejected_unchanged(opt, tmp_path / "deep2.npz", match="nests")


def test_metadata_size_is_bounded_before_parsing(tmp_path, monkeypatch):
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    meta = json.loads(str(np.load(tmp_path / "ok.npz")["__meta__"]))
    meta["padding"] = "x" * 5000
    items["__meta__.npy"] = meta_bytes(json.dumps(meta))
    write_zip(tmp_path / "big.npz", items)
    monkeypatch.setattr(_checkpoint, "META_MAX_BYTES", 4096)
    assert_rejected_unchanged(opt, tmp_path / "big.npz", match="metadata is .* bytes, more than")
    # a header claiming a huge metadata string in a small member
    items["__meta__.npy"] = npy_header((), "<U100000000") + b"\0" * 64
    write_zip(tmp_path / "claim.npz", items)
    monkeypatch.setattr(_checkpoint, "META_MAX_BYTES", 64 << 20)
    assert_rejected_unchanged(opt, tmp_path / "claim.npz", match="zip member holds")


# --- loading: forged npy headers and compressed members
def test_npy_header_with_huge_shape_raises_before_allocating(tmp_path):
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    for shape in ((10**12,), (10**6, 10**6), (2**62, 4)):
        items["state/0/exp_avg.npy"] = npy_header(shape, "<f4") + b"\0" * 40
        write_zip(tmp_path / "huge.npz", items)
        assert_rejected_unchanged(opt, tmp_path / "huge.npz", peak_limit=1 << 20)


def test_npy_header_shape_or_dtype_not_the_parameters_is_rejected_before_reading(tmp_path):
    """With the parameters known, each buffer's header must match its
    parameter's shape and dtype before its data is read."""
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    for bad in (np.zeros(11, np.float32), np.zeros(10, np.float64), np.zeros((2, 5), np.float32),
                np.zeros(10, np.float16), np.zeros(10, ">f4")):
        items["state/0/exp_avg.npy"] = npy_bytes(bad)
        write_zip(tmp_path / "bad.npz", items)
        with pytest.raises(ValueError, match=INVALID):
            _checkpoint.read(tmp_path / "bad.npz", "Adam", opt.param_groups[0]["params"])
        # through load(), by the reader or by load_state_dict's check
        assert_rejected_unchanged(opt, tmp_path / "bad.npz", match=(
            INVALID + r"|must be an array of dtype float32 and shape \(10,\)"))


def _deflated_zeros_member(path, items, name, header, nbytes):
    """Write items plus a deflated member name: header then nbytes zeros,
    streamed (the test itself never holds nbytes)."""
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in items.items():
            if k != name:
                zf.writestr(k, v)
        zi = zipfile.ZipInfo(name)
        zi.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(zi, "w", force_zip64=True) as w:
            w.write(header)
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                w.write(chunk)


def test_compressed_member_inflating_huge_raises_before_decompressing(tmp_path):
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    n = 1 << 26  # 256 MiB of float32 zeros, deflated to ~250 KiB
    _deflated_zeros_member(tmp_path / "bomb.npz", items, "state/0/exp_avg.npy",
                           npy_header((n,), "<f4"), 4 * n)
    assert os.path.getsize(tmp_path / "bomb.npz") < 4 << 20
    t0 = time.monotonic()
    assert_rejected_unchanged(opt, tmp_path / "bomb.npz", peak_limit=8 << 20)
    assert time.monotonic() - t0 < 5, "the member was decompressed before it was rejected"
    with pytest.raises(ValueError, match="its parameter has dtype float32 and shape"):
        _checkpoint.read(tmp_path / "bomb.npz", "Adam", opt.param_groups[0]["params"])


def test_compressed_member_of_the_right_shape_still_loads(tmp_path):
    """Bounding decompression must not refuse a valid compressed file when
    the parameters are known (np.savez_compressed of the same members)."""
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    write_zip(tmp_path / "z.npz", items, compress=set(items))
    sd = _checkpoint.read(tmp_path / "z.npz", "Adam", opt.param_groups[0]["params"])
    for k in ("exp_avg", "exp_avg_sq"):
        assert_bitwise(sd["state"][0][k], opt.state[0][k], k)


def test_zip_declared_size_disagreeing_with_npy_header_is_rejected(tmp_path):
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    good = items["state/0/exp_avg.npy"]
    for blob in (good + b"\0" * 4, good[:-4], good + bytes(1 << 16)):
        items["state/0/exp_avg.npy"] = blob
        write_zip(tmp_path / "bad.npz", items)
        assert_rejected_unchanged(opt, tmp_path / "bad.npz")


def test_duplicate_and_missing_members_are_rejected(tmp_path):
    p, opt = small_opt()
    opt.save(tmp_path / "ok.npz")
    items = members(tmp_path / "ok.npz")
    with zipfile.ZipFile(tmp_path / "dup.npz", "w") as zf:
        for k, v in items.items():
            zf.writestr(k, v)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
            zf.writestr("state/0/exp_avg.npy", npy_bytes(np.full(10, 7, np.float32)))
    assert_rejected_unchanged(opt, tmp_path / "dup.npz", match="appears twice")
    del items["state/0/exp_avg_sq.npy"]
    write_zip(tmp_path / "missing.npz", items)
    assert_rejected_unchanged(opt, tmp_path / "missing.npz", match="missing")


# --- saving
def test_killed_save_temp_files_are_cleaned_on_next_save(tmp_path):
    """SIGKILL a child in the middle of a save three times: each kill leaves
    a temp file, and the next save (the next child's, then ours) removes
    it: at most one is ever left, and none after a save completes."""
    path = tmp_path / "ckpt.npz"
    script = textwrap.dedent(f"""
        import numpy as np, adaptopt
        opt = adaptopt.Adam([np.zeros(4_000_000, np.float32)])
        opt.step([np.ones(4_000_000, np.float32)])
        print("go", flush=True)
        while True:
            opt.save({str(path)!r})
    """)
    for _ in range(3):
        before = {f for f in os.listdir(tmp_path) if f.endswith(".tmp")}
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "go"
            for _ in range(4000):  # a new temp file with data: past its cleanup, mid-write
                if any(_size(tmp_path / f) > 0 for f in os.listdir(tmp_path)
                       if f.endswith(".tmp") and f not in before):
                    break
                time.sleep(0.002)
            else:
                pytest.fail("never saw a save in progress")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    left = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert len(left) == 1, left  # the last kill's; without the cleanup, one per kill
    keep = tmp_path / "unrelated.tmp"
    keep.write_bytes(b"x")
    time.sleep(0.01)
    p, opt = small_opt()
    opt.save(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz", "unrelated.tmp"]


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_cleanup_removes_only_the_exact_pattern_of_that_target(tmp_path):
    path = tmp_path / "ckpt.npz"
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - 3600
        stale = [f".ckpt.npz.{dead}-abcd_123.tmp", ".ckpt.npz.zz9_abcd.tmp"]  # + pid-less (0.1)
        kept = [f".ckpt.npz.{sleeper.pid}-abcd_123.tmp",     # a live process's save
                f".other.npz.{dead}-abcd_123.tmp",           # another target
                f".ckpt.npz.{dead}-abcd_123.tmp.bak",        # not the exact pattern
                f"ckpt.npz.{dead}-abcd_123.tmp",             # no leading dot
                f".ckpt.npz.{dead}-abcd_1234.tmp",           # 9 random characters
                f".xckpt.npz.{dead}-abcd_123.tmp"]
        for name in stale + kept:
            (tmp_path / name).write_bytes(b"partial")
            os.utime(tmp_path / name, (old, old))
        future = f".ckpt.npz.{dead}-newer_00.tmp"            # newer than our own temp file
        (tmp_path / future).write_bytes(b"partial")
        os.utime(tmp_path / future, (time.time() + 3600,) * 2)
        os.symlink(tmp_path / "elsewhere", tmp_path / f".ckpt.npz.{dead}-link_000.tmp")
        kept += [future, f".ckpt.npz.{dead}-link_000.tmp"]
        p, opt = small_opt()
        opt.save(path)
        assert sorted(os.listdir(tmp_path)) == sorted(kept + ["ckpt.npz"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_save_through_symlink_writes_the_links_target(tmp_path):
    target_dir = tmp_path / "real"
    target_dir.mkdir()
    target = target_dir / "ckpt.npz"
    link = tmp_path / "latest.npz"
    os.symlink(target, link)  # dangling at first: the save creates the target
    p, opt = small_opt()
    opt.save(link)
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert target.is_file()
    opt.step([np.ones(10, np.float32)])
    opt.save(link)  # again, now over an existing target
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert not [f for f in os.listdir(tmp_path) if f != "real" and f != "latest.npz"]
    opt2 = adaptopt.Adam([np.zeros(10, np.float32)], lr=0.01)
    opt2.load(target)
    assert opt2.state[0]["step"] == 2


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_saved_file_gets_the_umask_mode_as_np_save_does(tmp_path, umask):
    old = os.umask(umask)
    try:
        p, opt = small_opt()
        opt.save(tmp_path / "ckpt.npz")
        np.save(tmp_path / "ref.npy", p)
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "ckpt.npz").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "ref.npy").st_mode) == 0o666 & ~umask, oct(mode)


def test_save_over_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "ckpt.npz"
    p, opt = small_opt()
    opt.save(path)
    os.chmod(path, 0o640)
    opt.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_save_still_replaces_atomically_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.npz"
    p, opt = small_opt()
    opt.save(path)
    ino = os.stat(path).st_ino
    opt.step([np.ones(10, np.float32)])
    opt.save(path)
    assert os.stat(path).st_ino != ino  # a new file renamed over the old, not rewritten
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    opt2 = adaptopt.Adam([np.zeros(10, np.float32)], lr=0.01)
    opt2.load(path)
    assert opt2.state[0]["step"] == 2
