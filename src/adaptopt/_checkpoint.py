"""Checkpoints: an optimizer's state_dict in a .npz file, written crash-safely.

The file is written to a temporary file in the same directory, flushed and
fsync'ed, then renamed over the target with os.replace (atomic on POSIX
and Windows), and the directory is fsync'ed: a crash at any moment leaves
either the old checkpoint or the new one, never a mix.  Loading never runs
code: arrays are read with allow_pickle=False and the rest is JSON.
Schedules are stored as their to_dict(); any other callable lr cannot be
saved.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from . import schedules

FORMAT = "adaptopt-checkpoint"
VERSION = 1


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


def save(opt, path):
    """Write opt.state_dict() to path (a .npz file) atomically."""
    sd = opt.state_dict()
    meta = {"format": FORMAT, "version": VERSION, "optimizer": type(opt).__name__,
            "param_groups": [_encode_group(g, gi) for gi, g in enumerate(sd["param_groups"])],
            "state": {str(i): {"step": st["step"],
                               "buffers": [k for k in st if k != "step"]}
                      for i, st in sd["state"].items()}}
    arrays = {f"state/{i}/{k}": v for i, st in sd["state"].items()
              for k, v in st.items() if k != "step"}
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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


def read(path, expected_class):
    """The state_dict stored at path; ValueError if it is not a valid checkpoint."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"][()]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError("no adaptopt checkpoint header")
            if meta.get("version") != VERSION:
                raise ValueError(f"checkpoint format version {meta.get('version')!r}, "
                                 f"this adaptopt reads version {VERSION}")
            if meta.get("optimizer") != expected_class:
                raise ValueError(f"it holds a {meta.get('optimizer')} state, "
                                 f"not {expected_class}")
            state = {}
            for i, st in meta["state"].items():
                state[int(i)] = {"step": st["step"]}
                for k in st["buffers"]:
                    state[int(i)][k] = z[f"state/{i}/{k}"]
            groups = [_decode_group(g) for g in meta["param_groups"]]
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path} is not a valid adaptopt checkpoint: {e}") from None
    return {"state": state, "param_groups": groups}
