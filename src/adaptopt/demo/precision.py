"""Experiment 5: does it train with low-precision optimizer state (issue 14)?

scikit-learn's digits (8x8 images, 10 classes) with a one-hidden-layer
NumPy MLP (64-128-10, ReLU, softmax cross-entropy, float32), trained by seven
optimizers with their state in float32, bfloat16 and int8 (``state_dtype``),
the test accuracy averaged over seeds; and the regression tutorial's problem
in float32 with the same three state types.  Its first layer has 8,192
weights, so it gets 8-bit state; the biases, the second layer and the
regression's 10 coefficients are below 4,096 elements and keep float32 state
(bitsandbytes' rule), which the tables say.
"""

import numpy as np

import adaptopt

from .problems import full_mse, regression_data

__all__ = ["state_precision", "table", "plot", "OPTIMIZERS", "PRECISIONS"]

OPTIMIZERS = [
    ("Adam", "Adam", {"lr": 1e-3}),
    ("AdamW", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
    ("AMSGrad", "Adam", {"lr": 1e-3, "amsgrad": True}),
    ("Adagrad", "Adagrad", {"lr": 0.05}),
    ("RMSprop", "RMSprop", {"lr": 1e-3}),
    ("SGD+momentum", "SGD", {"lr": 0.05, "momentum": 0.9}),
    ("Lion", "Lion", {"lr": 1e-4}),
]
PRECISIONS = ("float32", "bfloat16", "int8")
HIDDEN, BATCH = 128, 64


def _available_precisions():
    try:
        import ml_dtypes  # noqa: F401  (NumPy's bfloat16)
        return PRECISIONS, []
    except ImportError:
        return ("float32", "int8"), ["bfloat16 state skipped: needs ml_dtypes"]


def _digits():
    from sklearn.datasets import load_digits  # the data ships with scikit-learn
    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def _train_mlp(X, y, cls_name, kwargs, state_dtype, seed, epochs):
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(X))
    test, train = order[:360], order[360:]
    W1 = (rng.randn(64, HIDDEN) * np.sqrt(2 / 64)).astype(np.float32)
    b1 = np.zeros(HIDDEN, np.float32)
    W2 = (rng.randn(HIDDEN, 10) * np.sqrt(1 / HIDDEN)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    params = [W1, b1, W2, b2]
    opt = getattr(adaptopt, cls_name)(params, state_dtype=state_dtype, **kwargs)
    onehot = np.eye(10, dtype=np.float32)
    for _ in range(epochs):
        perm = train[rng.permutation(train.size)]
        for s in range(0, perm.size, BATCH):
            xb, yb = X[perm[s:s + BATCH]], onehot[y[perm[s:s + BATCH]]]
            h = np.maximum(xb @ W1 + b1, 0)
            z = h @ W2 + b2
            e = np.exp(z - z.max(axis=1, keepdims=True))
            dz = (e / e.sum(axis=1, keepdims=True) - yb) / len(xb)
            dh = (dz @ W2.T) * (h > 0)
            opt.step([xb.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)])
    h = np.maximum(X[test] @ W1 + b1, 0)
    acc = float(np.mean(np.argmax(h @ W2 + b2, axis=1) == y[test]))
    kinds = sorted({str(v.dtype) for v in opt.state[0].values() if isinstance(v, np.ndarray)
                    and v.shape == W1.shape})
    return acc, kinds


def _regression(state_dtype, seed, epochs):
    rng = np.random.RandomState(seed)
    X, y, _ = regression_data(rng)
    X, y = X.astype(np.float32), y.astype(np.float32)
    theta = (rng.randn(X.shape[1]) * 0.01).astype(np.float32)
    opt = adaptopt.Adam([theta], lr=0.01, state_dtype=state_dtype)
    for _ in range(epochs):
        perm = rng.permutation(len(X))
        for s in range(0, len(X), 32):
            xb, yb = X[perm[s:s + 32]], y[perm[s:s + 32]]
            opt.step([(2 / len(xb)) * xb.T @ (xb @ theta - yb)])
    return full_mse(X.astype(np.float64), y.astype(np.float64), theta.astype(np.float64)), \
        str(opt.state[0]["exp_avg"].dtype)


def state_precision(quick=False, seed=42):
    """Final test accuracy (digits MLP) and MSE (regression) per optimizer and
    state type, mean over seeds; plain data."""
    precisions, notes = _available_precisions()
    seeds = [seed + k for k in range(1 if quick else 5)]
    epochs = 2 if quick else 15
    out = {"seeds": seeds, "epochs": epochs, "precisions": list(precisions), "notes": notes,
           "digits": None, "regression": []}
    try:
        X, y = _digits()
    except ImportError:
        notes.append("digits MLP skipped: needs scikit-learn (pip install scikit-learn)")
    else:
        runs = []
        names = OPTIMIZERS[:1] if quick else OPTIMIZERS
        for name, cls_name, kw in names:
            for sd in precisions:
                res = [_train_mlp(X, y, cls_name, kw, sd, s, epochs) for s in seeds]
                accs = [a for a, _ in res]
                runs.append({"name": name, "optimizer": cls_name, "kwargs": kw,
                             "state_dtype": sd, "accuracies": accs,
                             "mean_accuracy": float(np.mean(accs)), "W1_state": res[0][1]})
        out["digits"] = runs
    for sd in precisions:
        mses = [_regression(sd, s, 5 if quick else 50) for s in seeds]
        out["regression"].append({"state_dtype": sd, "mse": float(np.mean([m for m, _ in mses])),
                                  "theta_state": mses[0][1]})
    return out


def table(r):
    from .report import Table
    tables = []
    if r["digits"]:
        base = {x["name"]: x["mean_accuracy"] for x in r["digits"]
                if x["state_dtype"] == "float32"}
        rows = [[x["name"], x["state_dtype"], "/".join(x["W1_state"]),
                 f"{100 * x['mean_accuracy']:.2f}",
                 f"{100 * (x['mean_accuracy'] - base[x['name']]):+.2f}"] for x in r["digits"]]
        tables.append(Table(
            f"Digits MLP 64-{HIDDEN}-10, {r['epochs']} epochs: test accuracy (%), mean of "
            f"{len(r['seeds'])} seeds", ["optimizer", "state_dtype", "W1 state",
                                         "accuracy", "vs float32"], rows,
            ["W1 (8,192 weights) has the state type shown; smaller tensors keep float32."]))
    rows = [[x["state_dtype"], x["theta_state"], f"{x['mse']:.6g}"] for x in r["regression"]]
    tables.append(Table("Regression tutorial's problem (float32, Adam lr 0.01): full-data MSE",
                        ["state_dtype", "theta state", "MSE"], rows,
                        ["theta has 10 elements, below 4,096: int8 groups keep float32 state "
                         "there, so its rows agree by the size rule."] + r["notes"]))
    return tables


def plot(r, path):
    from .plots import _figure, _save
    fig, ((ax,),) = _figure(width=8.0)
    if r["digits"]:
        names = list(dict.fromkeys(x["name"] for x in r["digits"]))
        width = 0.8 / len(r["precisions"])
        for k, sd in enumerate(r["precisions"]):
            acc = [100 * next(x["mean_accuracy"] for x in r["digits"]
                              if x["name"] == n and x["state_dtype"] == sd) for n in names]
            ax.bar(np.arange(len(names)) + k * width, acc, width, label=f"state {sd}")
        ax.set_xticks(np.arange(len(names)) + width * (len(r["precisions"]) - 1) / 2, names)
        lo = min(100 * x["mean_accuracy"] for x in r["digits"])
        ax.set(ylim=(max(0, lo - 5), 103), ylabel="test accuracy (%)")
        ax.legend(loc="upper center", ncol=len(r["precisions"]))
    _save(fig, path, f"Digits MLP: float32 vs bfloat16 vs int8 optimizer state "
                     f"(mean of {len(r['seeds'])} seeds)")
