"""Row-wise steps of 2-D tables (embedding tables): ``Optimizer.step_rows``.

One call is one step of the table: the rows named in ``rows`` are updated
with their gradients, every other row is neither read nor written.

* **Duplicates** are summed first, exactly and in a fixed order: the
  gradient rows of one index are added left to right in the order they
  appear in ``rows`` (``acc = g[i0]; acc = acc + g[i1]; ...``, one rounding
  per addition in the table's dtype).  ``rows`` may be in any order.
* **Lazy** (the default), as torch.optim.SparseAdam and TF's LazyAdam: a
  touched row takes the algorithm's step ``t`` (the table's step count,
  counted once per call: bias corrections and ``lr`` schedules use it);
  untouched rows and their moments do not change (no decay).
* **exact=True** catches a row up when it is next touched, in closed form,
  for the ``k = t - 1 - row_step[r]`` steps since it was last updated, as
  if they had zero gradient: ``m <- beta1^k m``, ``v <- beta2^k v`` (Adam;
  AdamW also ``p <- (1 - lr*wd)^k p``), ``v <- alpha^k v`` (RMSprop; the
  centered average too), and for a momentum buffer ``b`` (SGD, RMSprop)
  ``p <- p + c*b`` with ``c = -lr * (mu*(1 - mu^k)/(1 - mu))`` (the steps
  the momentum would have moved p), then ``b <- mu^k b``.  Adagrad has
  nothing to catch up (a zero gradient changes nothing).  Adam's own
  movement of p during skipped steps (its momentum divided by a decaying
  sqrt(v)) has no closed form and is not applied.  The factors are
  computed in double (``math.pow`` / C ``pow``) and cast to the dtype;
  then the row takes its step.  L2 weight decay (a nonzero gradient on
  every skipped step) has no closed form either and is refused.

The kernel (``csrc/rows.c``) runs the algorithm's own segment function on
each touched row; the NumPy reference below runs the algorithm's reference
update on the gathered rows.  Both give the same bits on every ISA and
thread count.
"""

import math

import numpy as np

from . import _kernels

__all__ = ["ROW_KERNELS", "group_rows", "catchup_rule", "apply_rows", "step_rows"]

ROW_KERNELS = ("adam", "adagrad", "sgd", "rmsprop")
STATE_KEYS = ("row_step", "row_step_at")  # exact mode's per-row counters (see step_rows)
_DTYPE_CODE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


def group_rows(rows):
    """(urows, order, starts): the distinct rows, ascending; gradient rows
    ``order[starts[i]:starts[i+1]]`` (in call order) are those of urows[i].
    order and starts are None when rows is strictly increasing (each row
    its own group).  rows: a 1-D int64 array."""
    n = rows.size
    if n < 2 or bool((rows[1:] > rows[:-1]).all()):
        return rows, None, None
    shift = (n - 1).bit_length()
    if int(rows.max()).bit_length() + shift <= 63:
        # a stable argsort through one sort of unique keys (row, position): numpy's
        # vectorized sort, several times faster than kind="stable" here
        keys = (rows << shift) | np.arange(n, dtype=np.int64)
        keys.sort()
        order, srt = keys & ((1 << shift) - 1), keys >> shift
    else:
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
    new = np.flatnonzero(srt[1:] != srt[:-1]) + 1
    starts = np.empty(new.size + 2, dtype=np.int64)
    starts[0], starts[-1] = 0, n
    starts[1:-1] = new
    return srt[starts[:-1]], order.astype(np.int64, copy=False), starts


def catchup_rule(spec, h):
    """exact=True's catch-up for algorithm spec under h: ({buffer or "p":
    decay base}, drift) with drift None or (momentum buffer, -lr, mu)."""
    kernel, wd = spec.kernel, h.get("weight_decay", 0.0)
    if wd != 0 and not h.get("decoupled_weight_decay", False):
        raise ValueError(f"exact=True: {spec.name}'s L2 weight_decay ({wd!r}) makes every "
                         "skipped step's gradient nonzero, which has no closed form; use "
                         "weight_decay=0 (or AdamW's decoupled decay) or exact=False")
    bases, drift = {}, None
    if kernel == "adam":
        bases = {"exp_avg": h["betas"][0], "exp_avg_sq": h["betas"][1]}
        if wd != 0:
            bases["p"] = 1 - h["lr"] * wd
    elif kernel == "rmsprop":
        bases = {"square_avg": h["alpha"]}
        if h["centered"]:
            bases["grad_avg"] = h["alpha"]
    mu = h.get("momentum", 0.0) if kernel in ("sgd", "rmsprop") else 0.0
    if mu != 0:
        if mu >= 1:
            raise ValueError(f"exact=True needs momentum < 1 (a geometric sum), got {mu!r}")
        bases["momentum_buffer"] = mu
        drift = ("momentum_buffer", -h["lr"], mu)
    return bases, drift


def _drift_coef(lr, mu, k):
    return lr * (mu * (1 - math.pow(mu, k)) / (1 - mu))


def _scalars(spec, h, t, eps=None):
    flags, fixed = spec.fixed_scalars(h)
    for pos, v in zip(spec.step_positions(), spec.per_step(h, t, None)):
        fixed[pos] = v
    if eps is not None:
        fixed[spec.kernel_scalars.index("eps")] = eps
    return flags, fixed


def apply_rows(spec, h, t, p, g, bufs, urows, order, starts, row_step, rule, n_threads,
               reference=False, eps=None):
    """One row-wise step, already validated: p (n_rows x cols), g (n x cols),
    bufs {kernel buffer name: table} (those spec.buffers(h) uses), the
    grouping of group_rows, row_step (int64, or None), rule (catchup_rule,
    or None: lazy).  eps: overrides the kernel's eps scalar (SparseAdam's
    placement of eps).  reference: the NumPy twin instead of the kernel."""
    if reference:
        return _reference(spec, h, t, p, g, bufs, urows, order, starts, row_step, rule, eps)
    names = spec.kernel_buffers
    ptr = np.zeros(2 + len(names), dtype=np.uint64)
    ptr[0] = p.__array_interface__["data"][0]
    ptr[1] = g.__array_interface__["data"][0]
    for k, name in enumerate(names):
        if name in bufs:
            ptr[2 + k] = bufs[name].__array_interface__["data"][0]
    cu = None
    if rule is not None:
        bases, drift = rule
        cu = ([bases.get("p", 1.0), 1.0] + [bases.get(n, 1.0) for n in names],
              -1 if drift is None else 2 + names.index(drift[0]),
              0.0 if drift is None else drift[1], 0.0 if drift is None else drift[2])
    flags, fixed = _scalars(spec, h, t, eps)
    rc = _kernels.rows_step(spec.code, _DTYPE_CODE[p.dtype], p.shape[0], p.shape[1], ptr,
                            g.shape[0], urows, order, starts,
                            row_step if rule is not None else None, t, cu, fixed, flags,
                            n_threads)
    if rc != _kernels.OK:
        raise RuntimeError(f"adaptopt rows kernel rejected its arguments (code {rc})")
    if rule is None and row_step is not None:
        row_step[urows] = t


def _summed(g, order, starts):
    """The gradient of each group: its rows added left to right in call order."""
    if order is None:
        return g.copy()
    counts = np.diff(starts)
    out = g[order[starts[:-1]]]
    for j in range(1, int(counts.max()) if counts.size else 0):
        more = np.flatnonzero(counts > j)
        out[more] = out[more] + g[order[starts[:-1][more] + j]]
    return out


def _reference(spec, h, t, p, g, bufs, urows, order, starts, row_step, rule, eps):
    dt = p.dtype.type
    with np.errstate(all="ignore"):
        gs = _summed(g, order, starts)
        if rule is not None:
            bases, drift = rule
            ks = (t - 1) - row_step[urows]
            for r, k in zip(urows.tolist(), ks.tolist()):
                if k <= 0:
                    continue
                if drift is not None and drift[0] in bufs:
                    p[r] = p[r] + dt(_drift_coef(drift[1], drift[2], float(k))) * bufs[drift[0]][r]
                for name in ("p",) + spec.kernel_buffers:
                    arr = p if name == "p" else bufs.get(name)
                    if arr is not None and bases.get(name, 1.0) != 1.0:
                        arr[r] = arr[r] * dt(math.pow(bases[name], float(k)))
        if row_step is not None:
            row_step[urows] = t
        hh = h if eps is None else {**h, "eps": eps}
        sub = {name: b[urows] for name, b in bufs.items()}
        pr = p[urows]
        spec.update(pr, gs, sub, t, hh)
        p[urows] = pr
        for name, b in bufs.items():
            b[urows] = sub[name]


# --- the NumPy front end ----------------------------------------------------
def _check_rows(rows, n_rows):
    if isinstance(rows, (bool, np.bool_)):
        raise TypeError("rows must be a 1-D array of integer row indices, got a bool")
    a = np.asarray(rows)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise TypeError(f"rows must be a 1-D array of integer row indices, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"rows must be 1-D, got shape {a.shape}")
    if a.size:
        lo, hi = a.min(), a.max()
        if lo < 0:
            j = int(np.flatnonzero(a < 0)[0])
            raise ValueError(f"rows[{j}] is {int(a[j])}: row indices must be >= 0 (negative "
                             "indices are not taken from the end)")
        if hi >= n_rows:
            j = int(np.flatnonzero(a >= n_rows)[0])
            raise ValueError(f"rows[{j}] is {int(a[j])}: out of range for a table of "
                             f"{n_rows} rows")
    return a.astype(np.int64, copy=False)


def _check_row_grads(row_grads, p, n, i, spans):
    from ._base import _describe, _span
    if not isinstance(row_grads, np.ndarray):
        raise TypeError(f"row_grads must be a NumPy array, got {_describe(row_grads)}")
    if row_grads.dtype != p.dtype:
        raise TypeError(f"row_grads has dtype {row_grads.dtype}, params[{i}] has {p.dtype}: "
                        "no silent cast is made")
    if row_grads.shape != (n, p.shape[1]):
        raise ValueError(f"row_grads has shape {row_grads.shape}, expected {(n, p.shape[1])} "
                         "(one row of the table's width per entry of rows)")
    if not (row_grads.flags.c_contiguous and row_grads.flags.aligned):
        raise ValueError("row_grads must be C-contiguous and aligned (no silent copy is made)")
    hit = spans.find(*_span(row_grads)) if row_grads.size else None
    if hit is not None:
        raise ValueError(f"row_grads shares memory with {hit}: pass a separate array")


def _check_counters(st, where, n_rows, step):
    """exact mode's counters in state, if there: valid, or an error."""
    rs = st.get("row_step")
    if rs is None:
        if "row_step_at" in st:
            raise ValueError(f"{where} has 'row_step_at' but no 'row_step'")
        return
    if (not isinstance(rs, np.ndarray) or rs.dtype != np.int64 or rs.shape != (n_rows,)
            or not rs.flags.c_contiguous or not rs.flags.writeable or not rs.flags.aligned):
        raise ValueError(f"{where}['row_step'] must be a writeable C-contiguous int64 array of "
                         f"shape ({n_rows},)")
    at = st.get("row_step_at")
    if type(at) is not int or not 0 <= at <= step:
        raise ValueError(f"{where}['row_step_at'] must be an int in [0, {step}], got {at!r}")


def step_rows(opt, param_index, rows, row_grads, exact):
    """Optimizer.step_rows (see its docstring); the caller holds opt's lock."""
    from . import _base
    from ._config import resolve_threads
    threads = resolve_threads(opt.n_threads)
    params = opt._sync()
    spec = opt.spec
    if spec.kernel not in ROW_KERNELS:
        raise TypeError(f"step_rows is not available for {type(opt).__name__}: it supports "
                        "Adam, AdamW, Adagrad, SGD and RMSprop")
    if isinstance(param_index, (bool, np.bool_)) or not isinstance(
            param_index, (int, np.integer)):
        raise TypeError(f"param_index must be an int, got {type(param_index).__name__}")
    i = int(param_index)
    if not 0 <= i < len(params):
        raise ValueError(f"param_index is {i}: the optimizer has parameters 0..{len(params) - 1}")
    if not isinstance(exact, (bool, np.bool_)):
        raise TypeError(f"exact must be a bool, got {exact!r}")
    p = params[i]
    if p.ndim != 2:
        raise ValueError(f"params[{i}] has shape {p.shape}: step_rows updates rows of a 2-D "
                         "table")
    gi, base = 0, 0
    while base + len(opt.param_groups[gi]["params"]) <= i:
        base += len(opt.param_groups[gi]["params"])
        gi += 1
    snap = opt._snapshot(gi)
    opt._check_state(i, snap.hyper)
    st = opt.state.get(i, {})
    step = _base.check_step(f"state[{i}]['step']", st.get("step", 0))
    _check_counters(st, f"state[{i}]", p.shape[0], step)
    t = step + 1
    h = snap.resolved(t)
    a = _check_rows(rows, p.shape[0])
    spans = opt._owned_spans(params, opt.state)
    _check_row_grads(row_grads, p, a.size, i, spans)
    rule = catchup_rule(spec, h) if exact else None
    rs = st.get("row_step")
    if exact and rs is not None and st.get("row_step_at") == step and a.size:
        bad = np.flatnonzero((rs[a] < 0) | (rs[a] > step))
        if bad.size:
            r = int(a[bad[0]])
            raise ValueError(f"state[{i}]['row_step'][{r}] is {int(rs[r])}: a row's last step "
                             f"must be in [0, {step}]")
    # everything is checked: from here on the step is taken
    urows, order, starts = group_rows(a)
    opt._ensure_state(i, h)
    st = opt.state[i]
    for name in spec.buffers(h):
        if name not in st:  # made from the first gradient (SGD's momentum): zeros for rows
            st[name] = np.zeros_like(p)
    if exact and "row_step" not in st:
        st["row_step"] = np.full(p.shape[0], step, dtype=np.int64)
    row_step = st.get("row_step")
    if row_step is not None and st.get("row_step_at", step) != step:
        row_step[...] = step  # the last step was a dense one: every row took it
    bufs = {name: st[name] for name in spec.buffers(h)}
    apply_rows(spec, h, t, p, row_grads, bufs, urows, order, starts, row_step, rule, threads,
               reference=getattr(opt, "_rows_reference", False))
    st["step"] = t
    if row_step is not None:
        st["row_step_at"] = t


def check_loaded(where, key, value, p):
    """A state_dict's exact-mode counter, cleaned (a copy)."""
    if key == "row_step":
        if (not isinstance(value, np.ndarray) or value.dtype.kind not in "iu"
                or value.shape != (p.shape[0],)):
            raise ValueError(f"{where}['row_step'] must be an integer array of shape "
                             f"({p.shape[0]},)")
        return np.array(value, dtype=np.int64, order="C", copy=True)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where}['row_step_at'] must be an int, got {value!r}")
    return int(value)
