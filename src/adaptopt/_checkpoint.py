"""Checkpoints: an optimizer's state_dict in a .npz file, written crash-safely.

Saving.  The file is written to a temporary file in the target's directory,
flushed and fsync'ed, then renamed over the target with os.replace (atomic
on POSIX and Windows), and the directory is fsync'ed: a crash at any moment
leaves either the old checkpoint or the new one, never a mix.

* A symlink as the path is followed: its target is written and the link
  stays (as ``np.save`` does).
* The file gets the mode ``np.save`` would give it: an existing target's
  permission bits, else ``0o666`` less the umask.
* A killed save leaves its temporary file ``.<name>.<pid>-<random>.tmp``
  behind; the next save to the same target removes such files of processes
  that no longer run, older than its own temporary file, and nothing else.

Loading never runs code and allocates nothing the file has not earned: the
path must be a regular file (a FIFO, device, socket or directory raises at
once, without blocking); the JSON metadata is bounded in size and nesting
before it is parsed; every array member's npy header is read and checked
(dtype, shape, and the zip's declared size) before its data, and, when the
optimizer's parameters are given, against the parameter it belongs to, so
neither a forged header nor a compressed member that inflates to gigabytes
gets a large allocation.  Schedules are stored as their to_dict(); any
other callable lr cannot be saved.
"""

import json
import numbers
import os
import re
import stat
import tempfile
import zipfile

import numpy as np

from . import schedules

FORMAT = "adaptopt-checkpoint"
VERSION = 1

META_MAX_BYTES = 64 << 20   # the metadata (JSON) of a checkpoint, at most
META_MAX_DEPTH = 32         # nesting of JSON arrays/objects (a schedule nests 3-4 levels)
HEADER_MAX_BYTES = 10000    # an npy header (NumPy's own default limit)
MEMBER_RE = re.compile(r"state/(\d{1,18})/([A-Za-z_]{1,64})\.npy")
_ARRAY_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # native byte order
_COUNTERS = ("step", "row_step_at")  # ints kept in the metadata (row_step_at: adaptopt._rows)


def _encode_group(group, gi):
    out = {}
    for k, v in group.items():
        if isinstance(v, schedules.Schedule):
            v = v.to_dict()
        elif callable(v):
            raise ValueError(f"param_groups[{gi}][{k!r}] is a callable that is not an "
                             "adaptopt.schedules schedule: it cannot be saved without pickle")
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


def _decode_group(group):
    return {k: (schedules.from_dict(v) if isinstance(v, dict) else
                tuple(v) if isinstance(v, list) and k != "params" else v)
            for k, v in group.items()}


# --- saving
def _temp_prefix(name):
    return f".{name}.{os.getpid()}-"


def _temp_re(name):
    """Temporary files of saves to a target named name: ours, or (without the
    pid) those of adaptopt 0.1's saves."""
    return re.compile(r"\." + re.escape(name) + r"\.(?:(\d+)-)?[a-z0-9_]{8}\.tmp\Z")


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process, or unknowable: keep its file
    return True


def _remove_stale_temps(directory, name, own):
    """Remove the temporary files earlier saves to directory/name left behind
    when killed: files matching the temp-name pattern of that target exactly,
    written by a process that no longer runs, and older than own (our own
    temporary file).  Never follows a link, never touches anything else."""
    pattern = _temp_re(name)
    try:
        limit = os.stat(own).st_mtime_ns
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or entry.path == own:
            continue
        if m.group(1) is not None and _pid_alive(int(m.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime_ns >= limit:
                continue
            if m.group(1) is None and st.st_mtime_ns > limit - 60 * 10**9:
                continue  # a pid-less name: only once it is a minute older than ours
            os.unlink(entry.path)
        except OSError:
            pass


def _umask():
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread-safe, hence the fallback only
    os.umask(mask)
    return mask


def _file_mode(target):
    """np.save's mode for target: an existing file keeps its permission bits
    (open(..., "wb") does not change them), a new one gets 0o666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def save(opt, path):
    """Write opt.state_dict() to path (a .npz file) atomically."""
    sd = opt.state_dict()
    meta = {"format": FORMAT, "version": VERSION, "optimizer": type(opt).__name__,
            "param_groups": [_encode_group(g, gi) for gi, g in enumerate(sd["param_groups"])],
            "state": {str(i): {"step": st["step"],
                               "buffers": [k for k in st if k not in _COUNTERS],
                               **{k: st[k] for k in _COUNTERS[1:] if k in st}}
                      for i, st in sd["state"].items()}}
    arrays = {f"state/{i}/{k}": v for i, st in sd["state"].items()
              for k, v in st.items() if k not in _COUNTERS}
    for name, v in arrays.items():  # a list or other object in state is not saved as an array
        if isinstance(v, bool) or not isinstance(v, (np.ndarray, numbers.Real)):
            raise ValueError(f"{name.replace('state/', 'state[', 1).replace('/', '][', 1)}] "
                             f"must be an array or a number to be saved, got "
                             f"{type(v).__name__}")
    path = os.fspath(path)
    # Through a symlink, write the file it points to and leave the link.
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    directory, name = os.path.split(target)
    mode = _file_mode(target)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(name), suffix=".tmp", dir=directory)
    try:
        _remove_stale_temps(directory, name, tmp)
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        if not hasattr(os, "fchmod"):
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --- loading
def _open_regular(path):
    """A binary file object for path, which must be a regular file.

    stat first (never blocks), then open with O_NONBLOCK (a FIFO swapped in
    meanwhile does not block either) and check the opened file again."""
    st = os.stat(path)  # FileNotFoundError propagates as such
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file ({_kind(st.st_mode)})")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file ({_kind(st.st_mode)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _kind(mode):
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return f"file type {stat.S_IFMT(mode):#o}"


class _Invalid(ValueError):
    """A reason the file is not a valid checkpoint (worded for the message)."""


def _read_header(stream, what):
    """(shape, fortran_order, dtype, header_bytes) of the npy stream at its start."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                stream, max_header_size=HEADER_MAX_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                stream, max_header_size=HEADER_MAX_BYTES)
        else:
            raise _Invalid(f"npy format version {version} is not supported")
    except _Invalid:
        raise
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError) as e:
        raise _Invalid(f"{what}: bad npy header ({e})") from None
    if not isinstance(shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _Invalid(f"{what}: bad shape {shape!r} in its npy header")
    return shape, bool(fortran), dtype, stream.tell()


def _check_member(info, file_size, what, shape, dtype, header_bytes):
    """The member's declared sizes must agree with its npy header and the file."""
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if info.file_size != header_bytes + nbytes:
        raise _Invalid(f"{what}: its npy header declares shape {shape} of {dtype} "
                       f"({header_bytes + nbytes} bytes with the header) but the zip "
                       f"member holds {info.file_size} bytes")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise _Invalid(f"{what}: stored member with compressed size {info.compress_size} "
                       f"!= size {info.file_size}")
    if info.header_offset + info.compress_size > file_size:
        raise _Invalid(f"{what}: the member extends past the end of the file")
    return count


def _read_data(stream, count, dtype, shape, fortran, what):
    out = np.empty(count, dtype=dtype)
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise _Invalid(f"{what}: the data ends after {got} of {len(view)} bytes")
        got += n
    if stream.read(1):
        raise _Invalid(f"{what}: data continues past the array")
    return out.reshape(shape, order="F" if fortran else "C")


def _json_depth(text):
    """How deeply text's JSON arrays and objects nest (strings skipped),
    computed without recursion."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    b = np.frombuffer(stripped.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    step = (np.isin(b, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(b, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(step).max(initial=0))


def _read_meta(zf, infos, file_size):
    info = infos.get("__meta__.npy")
    if info is None:
        raise _Invalid("no adaptopt checkpoint header (__meta__)")
    if info.file_size > META_MAX_BYTES:
        raise _Invalid(f"its metadata is {info.file_size} bytes, more than the "
                       f"{META_MAX_BYTES} a checkpoint may have")
    with zf.open(info) as s:
        shape, fortran, dtype, hb = _read_header(s, "__meta__")
        if shape != () or dtype.kind != "U":
            raise _Invalid(f"__meta__ must be a 0-d unicode array, got {dtype} {shape}")
        _check_member(info, file_size, "__meta__", shape, dtype, hb)
        data = s.read(dtype.itemsize + 1)
    if len(data) != dtype.itemsize:
        raise _Invalid("__meta__: truncated")
    text = str(np.frombuffer(data, dtype=dtype)[0])
    depth = _json_depth(text)
    if depth > META_MAX_DEPTH:
        raise _Invalid(f"its metadata nests {depth} levels deep, more than "
                       f"{META_MAX_DEPTH}")
    try:
        return json.loads(text)
    except RecursionError:
        raise _Invalid("its metadata nests too deeply") from None


def read(path, expected_class, params=None):
    """The state_dict stored at path; ValueError if it is not a valid checkpoint.

    params: the optimizer's parameters (a sequence of arrays), if known.  Each
    state buffer must then have its parameter's dtype and shape, checked on
    its npy header before its data is read; without them a buffer is bounded
    by its own declared size and compressed members are refused (their size
    is not bounded by the file's)."""
    path = os.fspath(path)
    try:
        f, file_size = _open_regular(path)
        with f, zipfile.ZipFile(f) as zf:
            infos = {}
            for info in zf.infolist():
                if info.filename in infos:
                    raise _Invalid(f"member {info.filename!r} appears twice")
                infos[info.filename] = info
            meta = _read_meta(zf, infos, file_size)
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError("no adaptopt checkpoint header")
            if meta.get("version") != VERSION:
                raise ValueError(f"checkpoint format version {meta.get('version')!r}, "
                                 f"this adaptopt reads version {VERSION}")
            if meta.get("optimizer") != expected_class:
                raise ValueError(f"it holds a {meta.get('optimizer')} state, "
                                 f"not {expected_class}")
            if not isinstance(meta.get("state"), dict) or not isinstance(
                    meta.get("param_groups"), list):
                raise _Invalid("its metadata has no 'state' dict and 'param_groups' list")
            state = {}
            for i, st in meta["state"].items():
                if not (isinstance(i, str) and i.isdigit() and len(i) <= 18):
                    raise _Invalid(f"state key {i!r} is not a parameter index")
                if not isinstance(st, dict) or not isinstance(st.get("buffers"), list):
                    raise _Invalid(f"state[{i}] must be a dict with a 'buffers' list")
                idx = int(i)
                if params is not None and idx >= len(params):
                    raise _Invalid(f"it has state for parameter {idx}, the optimizer has "
                                   f"{len(params)} parameters")
                state[idx] = {"step": st.get("step")}
                state[idx].update({k: st[k] for k in _COUNTERS[1:] if k in st})
                for k in st["buffers"]:
                    name = f"state/{i}/{k}.npy"
                    if not isinstance(k, str) or not MEMBER_RE.fullmatch(name):
                        raise _Invalid(f"state[{i}] lists a bad buffer name {k!r}")
                    info = infos.get(name)
                    if info is None:
                        raise _Invalid(f"member {name!r} is missing")
                    state[idx][k] = _read_buffer(zf, info, file_size, f"state[{i}][{k!r}]",
                                                 None if params is None else params[idx],
                                                 row_counter=k == "row_step")
            groups = [_decode_group(g) if isinstance(g, dict) else g
                      for g in meta["param_groups"]]
    except FileNotFoundError:
        raise
    except RecursionError:
        raise ValueError(f"{path} is not a valid adaptopt checkpoint: "
                         "its metadata nests too deeply") from None
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError, AttributeError, NotImplementedError, OverflowError) as e:
        raise ValueError(f"{path} is not a valid adaptopt checkpoint: {e}") from None
    return {"state": state, "param_groups": groups}


def _read_buffer(zf, info, file_size, what, param, row_counter=False):
    if info.compress_type != zipfile.ZIP_STORED and param is None:
        raise _Invalid(f"{what} is a compressed member and the optimizer's parameters are "
                       "not known, so its size cannot be bounded (adaptopt writes "
                       "uncompressed checkpoints)")
    with zf.open(info) as s:
        shape, fortran, dtype, hb = _read_header(s, what)
        if row_counter:  # step_rows' per-row last steps (adaptopt._rows): int64, one per row
            if dtype != np.dtype(np.int64) or len(shape) != 1 or (
                    param is not None and shape != param.shape[:1]):
                raise _Invalid(f"{what} must be an int64 array of one entry per row")
        elif dtype not in _ARRAY_DTYPES or dtype.hasobject:
            raise _Invalid(f"{what} has dtype {dtype}: a checkpoint holds float32/float64")
        elif param is not None and (dtype != param.dtype or shape != param.shape):
            raise _Invalid(f"{what} is an array of dtype {dtype} and shape {shape}, its "
                           f"parameter has dtype {param.dtype} and shape {param.shape}")
        count = _check_member(info, file_size, what, shape, dtype, hb)
        return _read_data(s, count, dtype, shape, fortran, what)
