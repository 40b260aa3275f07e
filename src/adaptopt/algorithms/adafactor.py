"""Adafactor: torch.optim.Adafactor (torch 2.13, ``_single_tensor_adafactor``).

Not elementwise: the step needs row and column means of g^2 (>= 2-D
parameters, factored over the last two dims, the leading ones a batch), the
parameter's norm and the update's norm.  Every sum below has a FIXED order
(the C kernel, ``csrc/adafactor.c.inc``, computes the same sums in the same
order, whatever the thread count and ISA):

- :func:`lane_sum`: 16 lanes, lane k adds elements k, k+16, ... left to
  right from +0 (zero padded), then folded ``a[:8] + a[8:]``, ``[:4] + [4:8]``,
  ``[:2] + [2:4]``, ``[0] + [1]``;
- column sums: per block of ``ROW_BLOCK`` rows top to bottom from +0, then
  the blocks' partials top to bottom from +0;
- the row_var mean and the norms' squares: double, left to right (the norms
  over the per-row, or for vectors per-``CHUNK``, partial sums).

torch's own reductions (``torch.norm`` then ``square_``, cascade sums) round
differently; see the tests for the measured distance.  torch computes
``alpha`` and ``denom`` in Python floats from float32 norms; here they are
double throughout (``sqrt`` of the double sums).
"""

import math

import numpy as np

from .. import _checks as c
from .._spec import Hyper, Spec
from ._common import lerp

LANES, ROW_BLOCK, CHUNK = 16, 64, 4096      # csrc/adaptopt.h: ADAPTOPT_ADAFACTOR_*


def lane_sum(x):
    """Sum over the last axis in LANES lanes (module docstring), in x's dtype."""
    n = x.shape[-1]
    x = np.concatenate([x, np.zeros(x.shape[:-1] + ((-n) % LANES,), x.dtype)], axis=-1)
    x = x.reshape(x.shape[:-1] + (-1, LANES))
    acc = np.zeros(x.shape[:-2] + (LANES,), x.dtype)
    for i in range(x.shape[-2]):
        acc = acc + x[..., i, :]
    h = LANES // 2
    while h:
        acc = acc[..., :h] + acc[..., h:2 * h]
        h //= 2
    return acc[..., 0]


def seq_sum(values):
    """Double sum, left to right from 0."""
    s = 0.0
    for v in np.asarray(values, dtype=np.float64).ravel():
        s = s + v
    return s


def clamp_min(x, lo):
    """torch's clamp_(min=lo): NaN stays NaN."""
    return np.where(x < lo, lo, x)


def state_shapes(shape):
    """The state buffers of a parameter of this shape (torch's)."""
    shape = tuple(shape)
    if len(shape) > 1:
        return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1])}
    return {"variance": shape}


def py_max(a, b):
    """Python's max(a, b): b only if b > a (NaN loses), as torch's Python floats."""
    return b if b > a else a


def update(p, g, state, t, h):
    T = p.dtype.type
    eps1, eps2 = h["eps"]
    if eps1 is None:
        eps1 = float(np.finfo(p.dtype).eps)
    w, rho = per_step(h, t, None)
    for k, shape in state_shapes(p.shape).items():   # torch makes them on the first step
        if k not in state:
            state[k] = np.zeros(shape, p.dtype)
    if h["maximize"]:
        g = -g
    n = p.size
    if n == 0:
        return
    tw = T(w)
    e2 = T(eps1 * eps1)
    if p.ndim > 1:
        rows, cols = p.shape[-2], p.shape[-1]
        p3, g3 = p.reshape(-1, rows, cols), g.reshape(-1, rows, cols)
        g2 = g3 * g3
        psq = lane_sum(p3 * p3)                          # (batch, rows)
        rowsq = lane_sum(g2)
        col = np.zeros((g3.shape[0], cols), p.dtype)
        for r0 in range(0, rows, ROW_BLOCK):             # column partials per block of rows
            part = np.zeros((g3.shape[0], cols), p.dtype)
            for r in range(r0, min(rows, r0 + ROW_BLOCK)):
                part = part + g2[:, r, :]
            col = col + part
        rv = state["row_var"].reshape(-1, rows)
        cv = state["col_var"].reshape(-1, cols)
        rv[...] = lerp(rv, rowsq / T(cols), tw)
        cv[...] = lerp(cv, col / T(rows), tw)
        rm = np.array([T(seq_sum(rv[b]) / rows) for b in range(rv.shape[0])], p.dtype)
        rm = clamp_min(rm, T(eps1))
        alpha = py_max(eps2, math.sqrt(seq_sum(psq)) / math.sqrt(n)) * rho

        def u_of():
            v = rv[:, :, None] * cv[:, None, :]          # row_var @ col_var
            v = v / rm[:, None, None]
            v = clamp_min(v, e2)
            return (T(1) / np.sqrt(v)) * g3

        u = u_of()
        usq = lane_sum(u * u)
        denom = py_max(1.0, math.sqrt(seq_sum(usq)) / (math.sqrt(n) * h["d"]))
        q = p3
    else:
        pf, gf = p.reshape(-1), g.reshape(-1)
        var = state["variance"].reshape(-1)
        var[...] = lerp(var, gf * gf, tw)
        u = (T(1) / np.sqrt(clamp_min(var, e2))) * gf
        nch = -(-n // CHUNK)
        pad = nch * CHUNK - n

        def chunks(x):
            return np.concatenate([x, np.zeros(pad, x.dtype)]).reshape(nch, CHUNK)

        alpha = py_max(eps2, math.sqrt(seq_sum(lane_sum(chunks(pf * pf)))) / math.sqrt(n)) * rho
        denom = py_max(1.0, math.sqrt(seq_sum(lane_sum(chunks(u * u)))) / (math.sqrt(n) * h["d"]))
        q = pf
    if h["weight_decay"] != 0:
        q *= fixed(h)["decay"]
    q += T(-alpha / denom) * u


def per_step(h, t, s):
    """(one_minus_beta2, rho): torch's t**beta2_decay and min(lr, 1/t**0.5)."""
    return t ** h["beta2_decay"], min(h["lr"], 1 / (t ** 0.5))


def fixed(h):
    eps1, eps2 = h["eps"]
    return {"eps1": -1.0 if eps1 is None else eps1, "eps2": eps2, "d": h["d"],
            "decay": 1 - h["lr"] * h["weight_decay"]}


def flags(h):
    return [n for n, on in (("maximize", h["maximize"]), ("decay", h["weight_decay"] != 0)) if on]


ENTRY = {"function": "adafactor_step", "buffers": ("row_var", "col_var", "variance"),
         "scalars": ("one_minus_beta2", "rho", "eps1", "eps2", "d", "decay"),  # adaptopt.h order
         "flags": ("maximize", "decay")}


def kernel_call(h, t, p, g, state, n_threads=1):
    """The C entry point's arguments for one step, as the engine should make
    them: (dtype, batch, rows, cols, p, g, row_var, col_var, variance, scal,
    flags, n_threads) with addresses as integers; p, g and the buffers
    C-contiguous and of p's dtype."""
    code = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}[p.dtype]
    fx = fixed(h)
    sc = dict(zip(("one_minus_beta2", "rho"), per_step(h, t, None)), **fx)
    scal = [sc[n] for n in ENTRY["scalars"]]
    fl = sum(1 << ENTRY["flags"].index(n) for n in flags(h))
    addr = (lambda a: 0 if a is None else a.ctypes.data)
    if p.ndim > 1:
        rows, cols = p.shape[-2], p.shape[-1]
        batch = p.size // (rows * cols) if rows * cols else 0
        return (code, batch, rows, cols, addr(p), addr(g), addr(state["row_var"]),
                addr(state["col_var"]), 0, scal, fl, n_threads)
    return (code, 1, 1, p.size, addr(p), addr(g), 0, 0, addr(state["variance"]), scal, fl,
            n_threads)


def _nonpos(name, value):
    value = c.finite(name, value)
    if value > 0:
        raise ValueError(f"{name} must be <= 0, got {value!r}")
    return value


def _eps1(name, value):
    return None if value is None else c.nonneg(name, value)


def _d(name, value):
    value = c.finite(name, value)
    if not value >= 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


ADAFACTOR = Spec(
    "Adafactor", kernel=None, entry=ENTRY, state_shapes=state_shapes, torch="Adafactor",
    update=update,
    hyper={"lr": Hyper(1e-2, c.learning_rate), "beta2_decay": Hyper(-0.8, _nonpos),
           "eps": Hyper((None, 1e-3), c.pair(_eps1, c.nonneg, "a pair (eps1 or None, eps2)")),
           "d": Hyper(1.0, _d), "weight_decay": Hyper(0.0, c.nonneg),
           "maximize": Hyper(False, c.flag)},
    buffers=lambda h: (),            # by shape: state_shapes(p.shape)
    flags=flags, fixed=fixed, per_step=per_step, step_scalars=("one_minus_beta2", "rho"),
    doc=r"""
    Adafactor (Shazeer & Stern), torch.optim.Adafactor's definition.

    .. math::

        \hat\beta_{2,t} &= 1 - t^{\tau}, \quad \rho_t = \min(\eta, 1/\sqrt t), \quad
        \alpha_t = \max(\epsilon_2, \mathrm{RMS}(p))\, \rho_t \\
        p &\leftarrow p\,(1 - \eta\lambda) \\
        R &\leftarrow \mathrm{lerp}(R, \overline{g^2}^{\,\text{row}}, 1-\hat\beta_{2,t}), \quad
        C \leftarrow \mathrm{lerp}(C, \overline{g^2}^{\,\text{col}}, 1-\hat\beta_{2,t}) \\
        \hat V &= \frac{R C}{\max(\bar R, \epsilon_1)} \ (\ge 2\text{-D}), \quad
        \hat V \leftarrow \mathrm{lerp}(\hat V, g^2, 1-\hat\beta_{2,t}) \ (\text{vectors}) \\
        U &= \frac{g}{\sqrt{\max(\hat V, \epsilon_1^2)}}, \quad
        p \leftarrow p - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U)/d)}\, U
    """, references="Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear "
                    "Memory Cost, ICML 2018.")
