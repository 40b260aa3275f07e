"""The experiments' results as PNG figures (matplotlib, optional).

Figures are made with ``matplotlib.figure.Figure`` and saved through the Agg
canvas: no pyplot, no global state, no display needed.  Each ``plot_*``
takes an experiment's result and a path and writes the PNG there.
"""

import numpy as np

from .tutorials import REGRESSION_TUTORIAL

__all__ = ["have_matplotlib", "PLOTS", "MISSING_HINT"]

MISSING_HINT = 'pip install "adaptopt[plot]"'


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported, so that the plots can be made.

    Returns
    -------
    bool
        False when it is not installed: ``pip install "adaptopt[plot]"``
        (``MISSING_HINT``) brings it.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(ncols=1, nrows=1, width=6.4, height=4.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path, title):
    fig.suptitle(title)
    fig.savefig(path, format="png", dpi=100)


def plot_linear_regression(r, path):
    fig, ((ax,),) = _figure()
    epochs = np.arange(1, r["epochs"] + 1)
    for run in r["runs"]:
        ax.plot(epochs, run["losses"], label=run["name"])
    ax.axhline(r["lstsq_mse"], color="k", ls=":", lw=1, label="least squares MSE")
    ax.set(yscale="log", xlabel="epoch", ylabel="epoch loss (the tutorial's definition)")
    ax.legend()
    _save(fig, path, f"Linear regression, mini-batch {r['batch_size']}: loss per epoch")


def plot_tutorial_rules(r, path):
    fig, ((ax, dx),) = _figure(2)
    epochs = np.arange(1, r["epochs"] + 1)
    for i, row in enumerate(r["rows"]):
        color = f"C{i}"
        if row["reset_step_each_epoch"] or row["name"] in ("Adagrad", "RMSprop"):
            ax.plot(epochs, row["tutorial_losses"], color=color, lw=3, alpha=0.35,
                    label=f"{row['name']}: tutorial's NumPy")
        ax.plot(epochs, row["adaptopt_losses"], color=color, ls="--",
                label=f"{row['name']}: adaptopt")
        diff = np.abs(np.array(row["adaptopt_losses"]) - np.array(row["tutorial_losses"]))
        dx.plot(epochs, np.maximum(diff, 1e-20), color=color, marker=".", label=row["name"])
    ax.set(yscale="log", xlabel="epoch", ylabel="epoch loss")
    ax.legend(fontsize="small")
    dx.set(yscale="log", xlabel="epoch", ylabel="|adaptopt - tutorial| (0 drawn at 1e-20)")
    dx.legend(fontsize="small")
    _save(fig, path, f"\"{REGRESSION_TUTORIAL}\": its NumPy rules vs adaptopt configured to match")


def plot_quadratic_1d(r, path):
    fig, ((ax,),) = _figure()
    steps = np.arange(r["steps"] + 1)
    for i, run in enumerate(r["runs"]):
        ax.plot(steps, run["trajectory"], color=f"C{i}", label=f"{run['name']} (adaptopt)")
        if run["tutorial_trajectory"] is not None:
            ax.plot(steps[::3], run["tutorial_trajectory"][::3], "o", color=f"C{i}", mfc="none",
                    label=f"{run['name']} (the tutorial's loop)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="step", ylabel="x")
    ax.legend()
    _save(fig, path, f"f(x) = 0.5 x^2 from x0 = {r['x0']:g}, lr = {r['lr']:g}")


def plot_adagrad_collapse(r, path):
    fig, ((ax,),) = _figure()
    steps = np.arange(1, r["steps"] + 1)
    for run in r["runs"]:
        ax.plot(steps, run["effective_lr"], label=run["name"])
    ax.set(xscale="log", yscale="log", xlabel="step",
           ylabel="lr / (sqrt(accumulator) + eps), mean over parameters")
    ax.legend()
    _save(fig, path, "Pitfall: AdaGrad's effective learning rate only falls")


def plot_eps_sensitivity(r, path):
    fig, ((ax,),) = _figure()
    for s in r["scales"]:
        ax.plot(r["eps"], r["mse"][repr(s)], marker="o", label=f"loss x {s:g}")
    ax.axhline(r["lstsq_mse"], color="k", ls=":", lw=1, label="least squares")
    ax.set(xscale="log", yscale="log", xlabel="eps", ylabel="final full-data MSE")
    ax.legend()
    _save(fig, path, f"Pitfall: Adam's eps (lr {r['lr']:g}, {r['epochs']} epochs)")


def plot_bias_correction(r, path):
    fig, ((ax, bx),) = _figure(2)
    steps = np.arange(1, r["steps"] + 1)
    for run in r["runs"]:
        style = dict(color=f"C{r['lrs'].index(run['lr'])}", ls="-" if run["corrected"] else "--",
                     label=run["name"])
        ax.plot(steps, run["update_size"], **style)
        bx.plot(steps, run["mse"], **style)
    ax.axhline(1, color="k", lw=0.5)
    ax.set(xscale="log", xlabel="step", ylabel="|delta theta| / lr (RMS over parameters)")
    bx.set(yscale="log", xlabel="step", ylabel="full-data MSE")
    ax.legend()
    _save(fig, path, "Pitfall: Adam without bias correction, first steps")


def plot_weight_decay(r, path):
    fig, ((ax, bx),) = _figure(2)
    rows = r["rows"]
    x = np.arange(len(rows))
    labels = [f"{row['weight_decay']:g}" for row in rows]
    ax.plot(x, [row["adam_l2_norm"] for row in rows], marker="o", label="Adam + L2")
    ax.plot(x, [row["adamw_norm"] for row in rows], marker="s", label="AdamW")
    ax.plot(x, [row["ridge_norm"] for row in rows], "k:", marker="x", label="ridge solution")
    ax.set(xticks=x, xticklabels=labels, xlabel="weight_decay", ylabel="final |theta|")
    ax.legend()
    bx.plot(x, [row["adam_l2_mse"] for row in rows], marker="o", label="Adam + L2")
    bx.plot(x, [row["adamw_mse"] for row in rows], marker="s", label="AdamW")
    bx.set(xticks=x, xticklabels=labels, yscale="log", xlabel="weight_decay",
           ylabel="final full-data MSE")
    bx.legend()
    _save(fig, path, "Pitfall: Adam's L2 penalty vs AdamW's decoupled decay")


def plot_ill_conditioned(r, path):
    fig, axes = _figure(2, 2, width=6.0, height=4.6)
    h = np.array(r["h"])
    floor = max(1e-300, min(min(run["f"]) for case in r["cases"] for run in case["runs"]))
    for col, case in enumerate(r["cases"]):
        ax, fx = axes[0][col], axes[1][col]
        lim = 1.3 * max(abs(v) for v in r["x0"])
        g = np.linspace(-lim, lim, 201)
        gx, gy = np.meshgrid(g, g)
        pts = np.stack([gx, gy], -1)
        if case["rotation_deg"] is not None:
            a = np.radians(case["rotation_deg"])
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            pts = pts @ rot.T
        f = 0.5 * (h[0] * pts[..., 0] ** 2 + h[1] * pts[..., 1] ** 2)
        ax.contour(gx, gy, f, levels=np.geomspace(f[f > 0].min() * 10, f.max(), 12),
                   colors="0.8", linewidths=0.6)
        for i, run in enumerate(case["runs"]):
            p = np.array(run["path"])
            ax.plot(p[:, 0], p[:, 1], color=f"C{i}", lw=0.9, label=run["name"])
            fx.plot(np.maximum(run["f"], floor), color=f"C{i}", label=run["name"])
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=case["name"],
               xlabel="x1", ylabel="x2")
        fx.set(yscale="log", xlabel="step", ylabel="f(x)", ylim=(floor / 10, None))
    axes[1][0].legend(fontsize="small")
    _save(fig, path, "Pitfall: ill-conditioned quadratic "
          f"(curvatures {r['h'][0]:g}, {r['h'][1]:g})")


def plot_low_precision(r, path):
    fig, ((ax,),) = _figure(1)
    for run in r["runs"]:
        steps = [min(k * r["every"], r["steps"] - 1) + 1 for k in range(len(run["mse"]))]
        ax.plot(steps, run["mse"], label=run["name"])
    ax.set(yscale="log", xlabel="step", ylabel="full-data MSE")
    ax.legend()
    _save(fig, path, f"Small updates (Adam, lr {r['lr']:g}) on {r['dtype']} weights")


PLOTS = {
    "linear-regression": plot_linear_regression,
    "tutorial-rules": plot_tutorial_rules,
    "quadratic-1d": plot_quadratic_1d,
    "adagrad-collapse": plot_adagrad_collapse,
    "eps-sensitivity": plot_eps_sensitivity,
    "bias-correction": plot_bias_correction,
    "weight-decay": plot_weight_decay,
    "ill-conditioned": plot_ill_conditioned,
    "low-precision": plot_low_precision,
}
