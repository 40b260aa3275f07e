"""The tutorials' experiments, run on adaptopt's optimizers.

Each function takes ``quick`` (fewer epochs/steps, for tests and a fast
look) and ``seed`` (of the ``RandomState`` that makes the data and the
shuffles; 42 is the regression tutorial's) and returns plain data: dicts, lists, floats,
strings.  Tables and plots are made from that data elsewhere
(``adaptopt.demo.report``, ``adaptopt.demo.plots``).

Optimizers are named by their class in ``adaptopt`` plus keyword arguments,
so a result says exactly what ran and can be re-run.
"""

import math

import numpy as np

import adaptopt

from . import tutorials
from .problems import full_mse, regression_data, run_quadratic, train_regression

__all__ = ["linear_regression", "tutorial_rules", "quadratic_1d", "adagrad_collapse",
           "eps_sensitivity", "bias_correction", "weight_decay", "ill_conditioned",
           "low_precision",
           "REGRESSION_OPTIMIZERS"]

EPOCHS, QUICK_EPOCHS = 50, 10
BATCH = 32

#: Experiment 1's optimizers: the tutorial's three learning rates, adaptopt's
#: defaults otherwise, and two more for comparison.
REGRESSION_OPTIMIZERS = [
    ("Adagrad", "Adagrad", {"lr": 0.1}),
    ("RMSprop", "RMSprop", {"lr": 0.01}),
    ("Adam", "Adam", {"lr": 0.01}),
    ("SGD+momentum", "SGD", {"lr": 0.01, "momentum": 0.9}),
    ("AdamW", "AdamW", {"lr": 0.01, "weight_decay": 0.01}),
]


def _factory(cls_name, kwargs):
    cls = getattr(adaptopt, cls_name)
    return lambda params: cls(params, **kwargs)


def _fork(rng):
    """An independent generator in the same state: the same draws again."""
    twin = np.random.RandomState()
    twin.set_state(rng.get_state())
    return twin


def _epochs(quick):
    return QUICK_EPOCHS if quick else EPOCHS


def _lstsq(X, y):
    return np.linalg.lstsq(X, y, rcond=None)[0]


# --- 1 ---------------------------------------------------------------------
def linear_regression(quick=False, seed=42):
    """The regression tutorial's mini-batch linear regression on adaptopt's optimizers.

    The random stream is the tutorial script's: data first, then each optimizer
    in turn draws its start and its epochs' shuffles, so Adagrad, RMSprop
    and Adam see exactly the draws the tutorial's three functions see.
    """
    rng = np.random.RandomState(seed)
    X, y, true_theta = regression_data(rng)
    epochs = _epochs(quick)
    runs = []
    for name, cls_name, kwargs in REGRESSION_OPTIMIZERS:
        theta, losses = train_regression(_factory(cls_name, kwargs), X, y, rng, epochs, BATCH)
        runs.append({"name": name, "optimizer": cls_name, "kwargs": dict(kwargs),
                     "losses": losses, "final_loss": losses[-1],
                     "mse": full_mse(X, y, theta),
                     "distance": float(np.linalg.norm(theta - true_theta)),
                     "theta": theta.tolist()})
    best = _lstsq(X, y)
    return {"seed": seed, "epochs": epochs, "batch_size": BATCH, "n_samples": X.shape[0],
            "n_features": X.shape[1], "true_theta": true_theta.tolist(),
            "lstsq_mse": full_mse(X, y, best),
            "lstsq_distance": float(np.linalg.norm(best - true_theta)), "runs": runs}


# --- 2 ---------------------------------------------------------------------
#: (name, the tutorial's function and kwargs, adaptopt's class and kwargs, what
#: was matched and what differs)
TUTORIAL_PAIRS = [
    ("Adagrad", "adagrad_optimizer", {"lr": 0.1},
     "Adagrad", {"lr": 0.1, "eps": 1e-8}, False,
     "eps 1e-8 (the tutorial's; adaptopt's default is 1e-10); both lr/(sqrt(G)+eps); "
     "the tutorial rounds lr/(sqrt(G)+eps)*g, adaptopt (-lr*g)/(sqrt(G)+eps)"),
    ("RMSprop", "rmsprop_optimizer", {"lr": 0.01},
     "RMSprop", {"lr": 0.01, "alpha": 0.9, "eps": 1e-8}, False,
     "the tutorial's beta=0.9 is alpha=0.9 (adaptopt's default is 0.99); "
     "both lr/(sqrt(E[g^2])+eps)"),
    ("Adam", "adam_optimizer", {"lr": 0.01},
     "Adam", {"lr": 0.01}, True,
     "the tutorial restarts t at every epoch: matched by resetting adaptopt's step "
     "count each epoch (load_state_dict); m_hat/(sqrt(v_hat)+eps) vs "
     "(lr/(1-b1^t))*m/(sqrt(v)/sqrt(1-b2^t)+eps): algebraically equal"),
    ("Adam, t not reset", None, None,
     "Adam", {"lr": 0.01}, False,
     "adaptopt's Adam as it is (step count never restarts), against the "
     "tutorial's Adam: its per-epoch reset of t is a real difference"),
]


def tutorial_rules(quick=False, seed=42):
    """The regression tutorial's hand-written update rules next to adaptopt, configured to match.

    Each pair runs on the same data, the same start and the same shuffles
    (the draws the tutorial's script gives that function).  The final losses agree
    to rounding; the last row shows what the tutorial's per-epoch restart of
    Adam's ``t`` changes.
    """
    rng = np.random.RandomState(seed)
    X, y, _ = regression_data(rng)
    epochs = _epochs(quick)
    rows, tutorial_runs = [], {}
    for name, fn, fn_kwargs, cls_name, kwargs, reset, note in TUTORIAL_PAIRS:
        if fn is not None:
            start = _fork(rng)   # the tutorial's function consumes rng's draws ...
            s_theta, s_losses = getattr(tutorials, fn)(X, y, n_epochs=epochs,
                                                         batch_size=BATCH, rng=rng, **fn_kwargs)
            tutorial_runs[cls_name] = (s_theta, s_losses, start)
        else:
            s_theta, s_losses, start = tutorial_runs[cls_name]
        # ... and adaptopt's twin replays the very same draws
        theta, losses = train_regression(_factory(cls_name, kwargs), X, y, _fork(start),
                                         epochs, BATCH, reset_each_epoch=reset)
        s_loss, a_loss = float(s_losses[-1]), float(losses[-1])
        rows.append({"name": name, "tutorial_function": fn or TUTORIAL_PAIRS[2][1],
                     "optimizer": cls_name, "kwargs": dict(kwargs),
                     "reset_step_each_epoch": reset, "note": note,
                     "tutorial_loss": s_loss, "adaptopt_loss": a_loss,
                     "abs_diff": abs(a_loss - s_loss),
                     "rel_diff": abs(a_loss - s_loss) / abs(s_loss),
                     "max_theta_diff": float(np.max(np.abs(theta - s_theta))),
                     "tutorial_losses": [float(v) for v in s_losses], "adaptopt_losses": losses})
    return {"seed": seed, "epochs": epochs, "batch_size": BATCH, "rows": rows}


# --- 3 ---------------------------------------------------------------------
QUADRATIC_OPTIMIZERS = [
    ("Adagrad", "Adagrad", {"lr": 1.0, "eps": 1e-8}),
    ("RMSprop", "RMSprop", {"lr": 1.0, "alpha": 0.9, "eps": 1e-8}),
    ("Adam", "Adam", {"lr": 1.0}),
]
QUADRATIC_MARKS = (10, 25, 50)


def quadratic_1d(quick=False, seed=42):
    """The quadratic tutorial: ``f(x) = 0.5 x^2`` from x0 = 5 with lr = 1 for 50 steps.

    Adagrad and RMSprop (gamma = alpha = 0.9, eps = 1e-8 as in the tutorial),
    plus Adam (lr = 1); next to each, the tutorial's own update loop where it
    has one.  Deterministic: ``quick`` and ``seed`` change nothing (50 steps
    are instant).
    """
    steps, x0 = 50, 5.0
    tutorial_loops = {"Adagrad": tutorials.adagrad_update, "RMSprop": tutorials.rmsprop_update}
    runs = []
    for name, cls_name, kwargs in QUADRATIC_OPTIMIZERS:
        path, _ = run_quadratic(_factory(cls_name, kwargs), [x0], [1.0], steps)
        traj = path[:, 0].tolist()
        run = {"name": name, "optimizer": cls_name, "kwargs": dict(kwargs), "trajectory": traj,
               "at": {str(k): traj[k] for k in QUADRATIC_MARKS}, "tutorial_trajectory": None,
               "tutorial_max_diff": None}
        if name in tutorial_loops:
            x, acc, st = x0, 0, [x0]
            for _ in range(steps):
                x, acc = tutorial_loops[name](x, 1.0, acc)
                st.append(float(x))
            run["tutorial_trajectory"] = st
            run["tutorial_max_diff"] = float(np.max(np.abs(np.array(st) - path[:, 0])))
        runs.append(run)
    return {"x0": x0, "lr": 1.0, "steps": steps, "marks": list(QUADRATIC_MARKS), "runs": runs}


# --- 4a --------------------------------------------------------------------
def _effective_lr(opt):
    """The mean over parameters of ``lr / (sqrt(accumulator) + eps)``."""
    (st,) = opt.state.values()
    g = opt.param_groups[0]
    acc = st["sum"] if "sum" in st else st["square_avg"]
    return float(np.mean(g["lr"] / (np.sqrt(acc) + g["eps"])))


def adagrad_collapse(quick=False, seed=42):
    """AdaGrad's effective learning rate ``lr/(sqrt(G)+eps)`` falls without end.

    Experiment 1's problem and settings (Adagrad lr 0.1, RMSprop lr 0.01),
    the same start and shuffles for both; recorded after every step.
    """
    rng = np.random.RandomState(seed)
    X, y, _ = regression_data(rng)
    epochs = _epochs(quick)
    runs = []
    for name, cls_name, kwargs in REGRESSION_OPTIMIZERS[:2]:
        eff = []
        theta, losses = train_regression(_factory(cls_name, kwargs), X, y, _fork(rng), epochs,
                                         BATCH,
                                         on_step=lambda s, t, o: eff.append(_effective_lr(o)))
        runs.append({"name": name, "optimizer": cls_name, "kwargs": dict(kwargs),
                     "effective_lr": eff, "losses": losses, "mse": full_mse(X, y, theta)})
    n = len(runs[0]["effective_lr"])
    marks = [k for k in (1, 10, 100, 1000) if k < n] + [n]
    return {"seed": seed, "epochs": epochs, "steps": n, "marks": marks, "runs": runs,
            "explanation": "AdaGrad divides by the square root of the sum of every "
                           "squared gradient so far, which can only grow, so its "
                           "effective learning rate can only fall, even once the "
                           "gradients are small; RMSprop's moving average forgets old "
                           "gradients, so its rate recovers as they shrink."}


# --- 4b --------------------------------------------------------------------
EPS_VALUES = [1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1]
EPS_SCALES = [1.0, 1e-3]


def eps_sensitivity(quick=False, seed=42):
    """Adam's final loss against eps, at two loss scales.

    Experiment 1's Adam (lr 0.01), the same start and shuffles for every
    run; the gradient is multiplied by ``scale`` (the loss scaled by it),
    and the loss reported is always the unscaled full-data MSE.
    """
    rng = np.random.RandomState(seed)
    X, y, _ = regression_data(rng)
    epochs = _epochs(quick)
    results = {}
    for scale in EPS_SCALES:
        row = []
        for eps in EPS_VALUES:
            theta, _ = train_regression(_factory("Adam", {"lr": 0.01, "eps": eps}), X, y,
                                        _fork(rng), epochs, BATCH, grad_scale=scale)
            row.append(full_mse(X, y, theta))
        results[repr(scale)] = row
    return {"seed": seed, "epochs": epochs, "lr": 0.01, "eps": list(EPS_VALUES),
            "scales": list(EPS_SCALES), "mse": results, "lstsq_mse": full_mse(X, y, _lstsq(X, y)),
            "explanation": "eps is added to sqrt(v), the RMS gradient, so it is not "
                           "scale-free: far below the gradient's size it changes "
                           "nothing, and once it is comparable it turns Adam into "
                           "plain SGD with step lr/eps, so the same eps is harmless "
                           "at one loss scale and stalls training at another."}


# --- 4c --------------------------------------------------------------------
BIAS_LRS = (0.01, 0.1)


def _no_bias_correction_lr(lr, b1, b2):
    """An lr schedule that cancels Adam's bias corrections.

    adaptopt's step is ``(lr/(1-b1^t)) m / (sqrt(v)/sqrt(1-b2^t) + eps)``;
    with ``lr(t) = lr (1-b1^t)/sqrt(1-b2^t)`` it is
    ``lr m / (sqrt(v) + eps sqrt(1-b2^t))``: uncorrected Adam with eps scaled
    by ``sqrt(1-b2^t) <= 1``.
    """
    return lambda t: lr * (1 - b1 ** t) / math.sqrt(1 - b2 ** t)


def bias_correction(quick=False, seed=42):
    """Adam with and without bias correction over its first steps.

    Experiment 1's problem at two learning rates (0.01, the regression tutorial's, and
    0.1), the same start and shuffles for all four runs; after each step the
    update's size ``|delta theta| / lr`` (RMS over parameters) and the
    full-data MSE.
    """
    rng = np.random.RandomState(seed)
    X, y, _ = regression_data(rng)
    steps = 100 if quick else 300
    b1, b2 = 0.9, 0.999
    start = _fork(rng).randn(X.shape[1]) * 0.01   # the start train_regression draws
    runs = []
    for lr in BIAS_LRS:
        for corrected in (True, False):
            sizes, mses, prev = [], [], [start]

            def record(s, theta, opt):
                if s <= steps:
                    sizes.append(float(np.sqrt(np.mean((theta - prev[0]) ** 2)) / lr))
                    mses.append(full_mse(X, y, theta))
                prev[0] = theta.copy()

            lr_arg = lr if corrected else _no_bias_correction_lr(lr, b1, b2)
            train_regression(_factory("Adam", {"lr": lr_arg, "betas": (b1, b2)}), X, y,
                             _fork(rng), -(-steps // BATCH), BATCH, on_step=record)
            runs.append({"name": f"lr {lr:g}, {'with' if corrected else 'without'} correction",
                         "lr": lr, "corrected": corrected, "update_size": sizes, "mse": mses})
    marks = [1, 2, 5, 10, 20, 50, 100] + ([steps] if steps > 100 else [])
    return {"seed": seed, "steps": steps, "lrs": list(BIAS_LRS), "betas": [b1, b2],
            "marks": marks, "start_mse": full_mse(X, y, start), "runs": runs,
            "explanation": "m and v start at 0 and underestimate the gradient's moments "
                           "early on, v (decay 0.999) far more than m (0.9), so without "
                           "the correction the first steps are several times lr "
                           "(3.2x at step 1): the step you get is not the lr you set, "
                           "a small lr is silently enlarged and a tuned one overshoots."}


# --- 4d --------------------------------------------------------------------
WEIGHT_DECAYS = [0.0, 0.001, 0.01, 0.1, 1.0]


def weight_decay(quick=False, seed=42):
    """Adam with an L2 term against AdamW's decoupled decay, same numbers.

    Experiment 1's problem, lr 0.01, the same start and shuffles; for each
    weight_decay the final ``|theta|`` of both and, for reference, the norm
    of the ridge solution the L2 penalty defines:
    ``(2 X'X/n + wd I)^-1 2 X'y/n``.
    """
    rng = np.random.RandomState(seed)
    X, y, _ = regression_data(rng)
    epochs = _epochs(quick)
    n, d = X.shape
    rows = []
    for wd in WEIGHT_DECAYS:
        row = {"weight_decay": wd}
        for key, cls_name in (("adam_l2", "Adam"), ("adamw", "AdamW")):
            theta, _ = train_regression(_factory(cls_name, {"lr": 0.01, "weight_decay": wd}),
                                        X, y, _fork(rng), epochs, BATCH)
            row[key + "_norm"] = float(np.linalg.norm(theta))
            row[key + "_mse"] = full_mse(X, y, theta)
        ridge = np.linalg.solve(2 * X.T @ X / n + wd * np.eye(d), 2 * X.T @ y / n)
        row["ridge_norm"] = float(np.linalg.norm(ridge))
        rows.append(row)
    return {"seed": seed, "epochs": epochs, "lr": 0.01, "rows": rows,
            "explanation": "Adam's L2 term is part of the gradient, so Adam+L2 heads "
                           "for the ridge solution of the penalised loss, while AdamW "
                           "shrinks the weights by lr*wd per step outside the adaptive "
                           "scaling, where only the normalised gradient m/sqrt(v) "
                           "(at most about 1 per weight) opposes it: the same "
                           "weight_decay is a different regularizer in each."}


# --- 4e --------------------------------------------------------------------
ILL_H = (1.0, 100.0)
ILL_X0 = (5.0, 1.0)
ILL_OPTIMIZERS = [
    ("SGD", "SGD", {"lr": 0.019}),
    ("SGD+momentum", "SGD", {"lr": 0.01, "momentum": 0.9}),
    ("Adagrad", "Adagrad", {"lr": 1.0}),
    ("RMSprop", "RMSprop", {"lr": 0.1}),
    ("Adam", "Adam", {"lr": 0.1}),
]


def _rotation(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def ill_conditioned(quick=False, seed=42):
    """SGD, SGD+momentum and the adaptive methods on ``0.5 (x1^2 + 100 x2^2)``.

    Condition number 100, from (5, 1); the same quadratic turned by 45 degrees
    (its axes no longer the coordinate axes).  SGD's lr is just under the
    stability limit 2/100.  Deterministic: ``seed`` changes nothing.
    """
    steps = 100 if quick else 300
    cases = []
    for label, deg in (("axis-aligned", None), ("rotated 45 deg", 45.0)):
        rot = None if deg is None else _rotation(deg)
        runs = []
        for name, cls_name, kwargs in ILL_OPTIMIZERS:
            path, f = run_quadratic(_factory(cls_name, kwargs), ILL_X0, ILL_H, steps, rot)
            runs.append({"name": name, "optimizer": cls_name, "kwargs": dict(kwargs),
                         "path": path.tolist(), "f": f.tolist()})
        cases.append({"name": label, "rotation_deg": deg, "runs": runs})
    marks = [10, 50, 100] + ([steps] if steps > 100 else [])
    return {"h": list(ILL_H), "x0": list(ILL_X0), "steps": steps, "marks": marks,
            "cases": cases,
            "explanation": "Per-coordinate step sizes undo ill-conditioning only when "
                           "the curvature lies along the coordinate axes: there the "
                           "adaptive methods shrug off the condition number, but "
                           "turned by 45 degrees they lose that edge and fall behind "
                           "SGD+momentum, which does not depend on the axes."}


# --- 5a --------------------------------------------------------------------
LOW_LR = 1e-5
LOW_VARIANTS = [("float32", {}), ("16-bit, round to nearest", {}),
                ("16-bit + master_weights", {"master_weights": True, "state_dtype": "float32"}),
                ("16-bit + stochastic_rounding", {"stochastic_rounding": True, "seed": 1})]


def _low_dtype():
    """bfloat16 where ml_dtypes gives NumPy one, else float16."""
    try:
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        return np.dtype(np.float16)


def low_precision(quick=False, seed=42):
    """Small updates on 16-bit weights: Adam, lr 1e-5, full-batch regression.

    Experiment 1's data; the weights start at zero.  Adam's step is about lr
    per weight, far below half a bfloat16 spacing once a weight is larger
    than ~0.005 (2^-8 relative spacing), so round to nearest drops every
    update from there on and training stalls.  A float32 master copy, or
    stochastic rounding (an update of a tenth of a spacing moves the weight
    one spacing one time in ten), keeps the float32 run's progress.
    """
    rng = np.random.RandomState(seed)
    X, y, _ = regression_data(rng)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    steps = 3000 if quick else 30000
    every = steps // 60
    low = _low_dtype()
    runs = []
    for name, kw in LOW_VARIANTS:
        dt = np.dtype(np.float32) if name == "float32" else low
        theta = np.zeros(X.shape[1], dt)
        opt = adaptopt.Adam([theta], lr=LOW_LR, **kw)
        mse = []
        for t in range(steps):
            th = theta.astype(np.float32)
            g = (2 / len(y32)) * (X32.T @ (X32 @ th - y32))
            opt.step([g.astype(dt)])
            if t % every == 0 or t == steps - 1:
                mse.append(full_mse(X, y, theta.astype(np.float64)))
        runs.append({"name": name, "settings": kw, "mse": mse,
                     "moved": float(np.abs(theta.astype(np.float64)).mean())})
    return {"seed": seed, "steps": steps, "every": every, "lr": LOW_LR, "dtype": low.name,
            "start_mse": full_mse(X, y, np.zeros(X.shape[1])), "runs": runs,
            "explanation": f"Adam moves each weight by about lr = {LOW_LR:g} per step. In "
                           f"{low.name} a weight above ~{LOW_LR * 2 ** 9:.3g} is more than two "
                           "such steps from its neighbours, so round to nearest gives the "
                           "same weight back and the loss stops falling; the float32 master "
                           "copy and stochastic rounding follow float32."}
