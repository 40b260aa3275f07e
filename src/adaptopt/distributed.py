"""Optimizer state sharded over MPI processes, for NumPy code (ZeRO stage 1).

::

    from mpi4py import MPI
    import adaptopt
    from adaptopt.distributed import ShardedOptimizer

    opt = ShardedOptimizer(adaptopt.AdamW, params, comm=MPI.COMM_WORLD, lr=1e-3)
    opt.step(grads)          # this rank's gradients; every rank's params updated

All parameters (one dtype) are laid out end to end in one flat space,
split into ``comm.size`` equal, contiguous shards whose boundaries fall on
64-byte cache lines.  A rank keeps the optimizer state of its shard only.
A step: the gradients are combined over the ranks (``reduce="mean"``:
``Reduce_scatter_block`` with SUM, then divided by the number of ranks;
``"sum"``: the sum; ``None``: every rank already holds the global
gradients, nothing is communicated and this rank reads its shard of them);
the rank's shard is updated by ONE fused call of the wrapped adaptopt
optimizer (its parameters are views of the shard: a parameter split
between ranks is two pieces); the updated shards are all-gathered
(``Allgather``) and copied into every rank's parameters.

Elementwise algorithms (all of adaptopt's but Adafactor) compute every
element exactly as the single-process optimizer does: given the same
global gradients, the parameters are bitwise those of
``optimizer_class(params, **hyperparameters)`` on one process.

Needs mpi4py (``pip install mpi4py``, over an MPI such as Debian's
``openmpi-bin libopenmpi-dev``); ``comm`` is any mpi4py intracommunicator.
Every method that communicates is collective: call it on every rank.
"""

import numpy as np

__all__ = ["ShardedOptimizer"]

CACHE_LINE = 64
_REDUCE = ("mean", "sum", None)


def _aligned_empty(n, dtype):
    """A 1-D array of n elements whose data starts on a cache line."""
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + CACHE_LINE, dtype=np.uint8)
    off = (-raw.ctypes.data) % CACHE_LINE
    return raw[off:off + n * dtype.itemsize].view(dtype)


class ShardedOptimizer:
    """An adaptopt optimizer whose state is split over the ranks of ``comm``.

    Parameters
    ----------
    optimizer_class : type
        An elementwise adaptopt NumPy optimizer class (``adaptopt.Adam``, ...).
    params : sequence of numpy.ndarray, or of dicts
        The parameters (or param groups ``{"params": [...], "lr": ...}``), the
        same on every rank, C-contiguous, one dtype (float32 or float64),
        none empty.  They are updated in place.
    comm : mpi4py.MPI.Intracomm
        The ranks that share the state.
    reduce : {"mean", "sum", None}
        How :meth:`step` combines the ranks' gradients: their mean (data
        parallel training), their sum, or not at all (each rank passes the
        global gradients already).
    **hyperparameters
        ``optimizer_class``'s defaults (lr, betas, ...).

    Attributes
    ----------
    param_groups : list of dict
        As the single-process optimizer's (the full parameters); edits of
        hyperparameters apply from the next step on every rank that makes
        them (make them on all).
    state : dict
        This rank's shard only: ``{parameter index: {"step": ..., "exp_avg":
        1-D slice, ...}}`` for the parameters with elements on this rank.
    ranges : dict
        ``{parameter index: (start, stop)}``: the elements (of the flattened
        parameter) this rank holds.
    """

    def __init__(self, optimizer_class, params, comm, reduce="mean", **hyperparameters):
        from . import _base
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, _base.Optimizer)):
            raise TypeError("optimizer_class must be an adaptopt NumPy optimizer class "
                            f"(adaptopt.Adam, ...), got {optimizer_class!r}")
        if getattr(optimizer_class.spec, "entry", None):
            raise TypeError(f"optimizer_class {optimizer_class.__name__} is not elementwise (its "
                            "statistics need whole matrices): it cannot be sharded by elements")
        if reduce not in _REDUCE:
            raise ValueError(f"reduce must be 'mean', 'sum' or None, got {reduce!r}")
        for name in ("rank", "size", "Allgather", "Reduce_scatter_block", "allgather"):
            if not hasattr(comm, name):
                raise TypeError(f"comm must be an mpi4py intracommunicator (MPI.COMM_WORLD), "
                                f"got {type(comm).__name__}")
        # the full optimizer checks params, groups and hyperparameters (nothing is kept)
        full = optimizer_class(params, **hyperparameters)
        self.optimizer_class, self.comm, self.reduce = optimizer_class, comm, reduce
        self.defaults = full.defaults
        self.param_groups = full.param_groups
        plist = [p for g in self.param_groups for p in g["params"]]
        dtypes = {p.dtype for p in plist}
        if len(dtypes) != 1:
            k = next(i for i, p in enumerate(plist) if p.dtype != plist[0].dtype)
            raise TypeError(f"params[{k}] has dtype {plist[k].dtype}, params[0] {plist[0].dtype}: "
                            "a ShardedOptimizer's parameters share one dtype")
        for k, p in enumerate(plist):
            if p.size == 0:
                raise ValueError(f"params[{k}] is empty: leave it out")
        self._params, self.dtype = plist, plist[0].dtype
        self.rank, self.world = comm.rank, comm.size
        sizes = [p.size for p in plist]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self._offsets[-1])
        line = CACHE_LINE // self.dtype.itemsize
        self.shard_size = -(-total // (self.world * line)) * line  # elements, whole lines
        self._flat = _aligned_empty(self.shard_size * self.world, self.dtype)
        self._flat[total:] = 0
        self._gflat = None  # the gradients' send buffer (reduce is not None), made on use
        lo, hi = self.rank * self.shard_size, (self.rank + 1) * self.shard_size
        self._lo, self._hi = lo, hi
        self._gshard = _aligned_empty(self.shard_size, self.dtype)
        self.ranges, self._inner_index = {}, []
        inner_groups = []
        for gi, g in enumerate(self.param_groups):
            pieces = []
            base = sum(len(x["params"]) for x in self.param_groups[:gi])
            for j in range(len(g["params"])):
                i = base + j
                a, b = max(lo, self._offsets[i]), min(hi, self._offsets[i + 1])
                if a < b:
                    self.ranges[i] = (int(a - self._offsets[i]), int(b - self._offsets[i]))
                    pieces.append(self._flat[a:b])
                    self._inner_index.append(i)
            if pieces:
                inner_groups.append(({k: v for k, v in g.items() if k != "params"}, pieces, gi))
        self._inner_groups = [gi for _, _, gi in inner_groups]
        self._copy_in()
        self._inner = (optimizer_class([{**h, "params": ps} for h, ps, _ in inner_groups],
                                       **hyperparameters) if inner_groups else None)

    # --- layout -------------------------------------------------------------
    def _copy_in(self):
        for i, p in enumerate(self._params):
            self._flat[self._offsets[i]:self._offsets[i + 1]] = p.reshape(-1)

    def _copy_out(self):
        for i, p in enumerate(self._params):
            p.reshape(-1)[...] = self._flat[self._offsets[i]:self._offsets[i + 1]]

    def _sync_groups(self):
        if self._inner is None:
            return
        for inner, gi in zip(self._inner.param_groups, self._inner_groups):
            for k, v in self.param_groups[gi].items():
                if k != "params" and inner.get(k) is not v:
                    inner[k] = v

    @property
    def state(self):
        if self._inner is None:
            return {}
        return {self._inner_index[k]: st for k, st in self._inner.state.items()}

    def state_bytes(self):
        """Bytes of optimizer state arrays this rank holds."""
        return sum(v.nbytes for st in self.state.values() for v in st.values()
                   if isinstance(v, np.ndarray))

    # --- the step -----------------------------------------------------------
    def _check_grads(self, grads):
        if isinstance(grads, np.ndarray) or not hasattr(grads, "__len__"):
            raise TypeError("grads must be a sequence with one array per parameter, got "
                            f"{type(grads).__name__}")
        if len(grads) != len(self._params):
            raise ValueError(f"grads has {len(grads)} entries, the optimizer "
                             f"{len(self._params)} parameters")
        for k, (p, g) in enumerate(zip(self._params, grads)):
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{k}] must be a NumPy array (every rank updates every "
                                f"parameter; None is not accepted), got {type(g).__name__}")
            if g.dtype != p.dtype or g.shape != p.shape:
                raise ValueError(f"grads[{k}] has dtype {g.dtype} and shape {g.shape}, the "
                                 f"parameter {p.dtype} and {p.shape}")

    def step(self, grads):
        """Combine the ranks' gradients, update this rank's shard, all-gather.

        Collective.  Parameters are updated in place on every rank.

        Parameters
        ----------
        grads : sequence of numpy.ndarray
            This rank's gradient of every parameter (``reduce=None``: the
            global gradients, the same on every rank).
        """
        self._check_grads(grads)
        mpi = _mpi()
        if self.reduce is None or self.world == 1:  # one rank: its gradients are the sum and mean
            shard = [g.reshape(-1)[a:b] for g, (a, b) in
                     ((grads[i], self.ranges[i]) for i in self._inner_index)]
        else:
            if self._gflat is None:
                self._gflat = _aligned_empty(self._flat.size, self.dtype)
                self._gflat[int(self._offsets[-1]):] = 0
            for i, g in enumerate(grads):
                self._gflat[self._offsets[i]:self._offsets[i + 1]] = g.reshape(-1)
            self.comm.Reduce_scatter_block(self._gflat, self._gshard, op=mpi.SUM)
            if self.reduce == "mean":
                np.divide(self._gshard, self.world, out=self._gshard)
            shard = []
            for i in self._inner_index:
                a, b = self.ranges[i]
                s = self._offsets[i] + a - self._lo
                shard.append(self._gshard[s:s + b - a])
        if self._inner is not None:
            self._sync_groups()
            self._inner.step([np.ascontiguousarray(s) for s in shard])
        if self.world > 1:
            self.comm.Allgather(mpi.IN_PLACE, self._flat)
        self._copy_out()

    # --- checkpoints --------------------------------------------------------
    def state_dict(self):
        """This rank's shard: the wrapped optimizer's state_dict (its
        parameters are this rank's pieces) and where the pieces lie."""
        return {"shard": {"rank": self.rank, "world": self.world, "numel":
                          [p.size for p in self._params],
                          "ranges": {i: self.ranges[i] for i in self._inner_index}},
                "inner": None if self._inner is None else self._inner.state_dict()}

    def consolidated_state_dict(self, root=0):
        """The single-process optimizer's state_dict (full arrays), on rank
        ``root``; None on the others.  Collective."""
        parts = self.comm.gather(self.state_dict(), root=root)
        if self.rank != root:
            return None
        state = {}
        for part in parts:
            inner = part["inner"]
            if inner is None:
                continue
            idx = list(part["shard"]["ranges"])
            for k, st in inner["state"].items():
                i = idx[k]
                a, b = part["shard"]["ranges"][i]
                p = self._params[i]
                full = state.setdefault(i, {})
                for key, v in st.items():
                    if isinstance(v, np.ndarray):
                        buf = full.setdefault(key, np.zeros(p.size, p.dtype))
                        buf[a:b] = v
                    else:
                        full[key] = v
        state = {i: {k: (v.reshape(self._params[i].shape) if isinstance(v, np.ndarray) else v)
                     for k, v in state[i].items()} for i in sorted(state)}
        groups, base = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(base, base + n))})
            base += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load this rank's shard (a :meth:`state_dict` of the same rank and
        layout) or a consolidated one (the single-process optimizer's
        state_dict: each rank takes its slices).  Checked by the wrapped
        optimizer first; a failure changes nothing."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        if "shard" in state_dict:
            sh = state_dict["shard"]
            mine = self.state_dict()["shard"]
            if not isinstance(sh, dict) or {k: sh.get(k) for k in mine} != mine:
                raise ValueError("state_dict is the shard of another rank or layout (rank "
                                 f"{sh.get('rank') if isinstance(sh, dict) else '?'} of "
                                 f"{sh.get('world') if isinstance(sh, dict) else '?'}); this "
                                 f"is rank {self.rank} of {self.world}: load a consolidated "
                                 "state_dict instead")
            inner = state_dict["inner"]
        else:
            full = self.optimizer_class(
                [{**{k: v for k, v in g.items() if k != "params"},
                  "params": [np.empty_like(p) for p in g["params"]]} for g in self.param_groups])
            full.load_state_dict(state_dict)  # checked against the full shapes
            sd = full.state_dict()
            inner = None
            if self._inner is not None:
                inner = self._inner.state_dict()
                inner["state"] = {}
                for k, i in enumerate(self._inner_index):
                    if i in sd["state"]:
                        a, b = self.ranges[i]
                        inner["state"][k] = {
                            key: (np.ascontiguousarray(v.reshape(-1)[a:b])
                                  if isinstance(v, np.ndarray) else v)
                            for key, v in sd["state"][i].items()}
                inner["param_groups"] = [{**sd["param_groups"][gi], "params": ig["params"]}
                                         for ig, gi in zip(inner["param_groups"],
                                                           self._inner_groups)]
            for g, s in zip(self.param_groups, sd["param_groups"]):
                g.update({k: v for k, v in s.items() if k != "params"})
        if self._inner is not None:
            self._inner.load_state_dict(inner)
        elif inner is not None:
            raise ValueError("state_dict holds state for a rank that has no parameters")

    def save(self, path):
        """Write this rank's shard with the wrapped optimizer's crash-safe
        checkpoint format to ``path`` (give each rank its own, e.g.
        ``f"ckpt.rank{comm.rank}.npz"``)."""
        if self._inner is not None:
            self._inner.save(path)

    def load(self, path):
        """Read this rank's shard written by :meth:`save` (same layout)."""
        if self._inner is not None:
            self._inner.load(path)

    def save_consolidated(self, path, root=0):
        """Write the consolidated state as the single-process optimizer's
        checkpoint (``optimizer_class.load(path)`` reads it) on ``root``.
        Collective."""
        sd = self.consolidated_state_dict(root)
        if sd is not None:
            full = self.optimizer_class([{**{k: v for k, v in g.items() if k != "params"},
                                          "params": g["params"]} for g in self.param_groups])
            full.load_state_dict(sd)
            full.save(path)

    def load_consolidated(self, path):
        """Read a single-process checkpoint (every rank reads the file and
        keeps its slices)."""
        full = self.optimizer_class([{**{k: v for k, v in g.items() if k != "params"},
                                      "params": [np.empty_like(p) for p in g["params"]]}
                                     for g in self.param_groups])
        full.load(path)
        self.load_state_dict(full.state_dict())


def _mpi():
    from mpi4py import MPI
    return MPI
