"""The experiments' results as plain-text tables."""

from .tutorials import QUADRATIC_TUTORIAL, REGRESSION_TUTORIAL

__all__ = ["Table", "render", "TABLES"]


class Table:
    """A titled grid of strings with notes underneath."""

    def __init__(self, title, headers, rows, notes=()):
        self.title, self.headers, self.notes = title, list(headers), list(notes)
        self.rows = [[str(c) for c in r] for r in rows]

    def __str__(self):
        return render(self)


def render(table):
    cols = range(len(table.headers))
    widths = [max(len(r[i]) for r in [table.headers] + table.rows) for i in cols]
    # numbers right-aligned, text left-aligned
    left = [not all(_numeric(r[i]) for r in table.rows) for i in cols]

    def line(cells):
        return "  ".join(c.ljust(w) if lj else c.rjust(w)
                         for c, w, lj in zip(cells, widths, left)).rstrip()

    out = [table.title, line(table.headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in table.rows]
    out += [f"  {n}" for n in table.notes]
    return "\n".join(out)


def _numeric(cell):
    try:
        float(cell)
    except ValueError:
        return cell == "-"
    return True


def _g(x, digits=6):
    return "-" if x is None else f"{x:.{digits}g}"


def _e(x):
    return "-" if x is None else f"{x:.2e}"


def _settings(kwargs):
    return ", ".join(f"{k}={v!r}" if not isinstance(v, float) else f"{k}={v:g}"
                     for k, v in kwargs.items())


def linear_regression(r):
    rows = [[run["name"], _settings(run["kwargs"]), _g(run["final_loss"]), _g(run["mse"]),
             _g(run["distance"], 4)] for run in r["runs"]]
    rows.append(["least squares", "exact solution", "-", _g(r["lstsq_mse"]),
                 _g(r["lstsq_distance"], 4)])
    return [Table(f"Linear regression, {r['n_samples']}x{r['n_features']}, batch "
                  f"{r['batch_size']}, {r['epochs']} epochs, seed {r['seed']}",
                  ["optimizer", "settings", "final epoch loss", "full-data MSE",
                   "|theta - true_theta|"], rows,
                  [f"epoch loss as \"{REGRESSION_TUTORIAL}\" computes it: batch losses "
                   "before each update, "
                   "summed, / (n // batch) = 31 (there are 32 batches)",
                   "full-data MSE: of the final theta over all samples; least squares is "
                   "the best any optimizer can reach"])]


def tutorial_rules(r):
    rows = [[row["name"], _g(row["tutorial_loss"], 12), _g(row["adaptopt_loss"], 12),
             _e(row["abs_diff"]), _e(row["rel_diff"]), _e(row["max_theta_diff"])]
            for row in r["rows"]]
    notes = [f"{row['name']}: {_settings(row['kwargs'])}; {row['note']}" for row in r["rows"]]
    return [Table(f"\"{REGRESSION_TUTORIAL}\": its NumPy rules vs adaptopt, {r['epochs']} epochs, "
                  f"seed {r['seed']}",
                  ["rule", "tutorial's final loss", "adaptopt's final loss", "|difference|",
                   "relative", "max |theta diff|"], rows, notes)]


def quadratic_1d(r):
    rows = [[run["name"], _settings(run["kwargs"])] + [_g(run["at"][str(k)], 6) for k in r["marks"]]
            + [_e(run["tutorial_max_diff"]) if run["tutorial_max_diff"] is not None
               else "(no loop there)"]
            for run in r["runs"]]
    return [Table(f"f(x) = 0.5 x^2 from x0 = {r['x0']:g}, lr = {r['lr']:g}, {r['steps']} steps",
                  ["optimizer", "settings"] + [f"x after {k}" for k in r["marks"]]
                  + ["tutorial's loop: max |x diff|"], rows,
                  [f"tutorial's loop: the update rules of \"{QUADRATIC_TUTORIAL}\""])]


def adagrad_collapse(r):
    rows = []
    for run in r["runs"]:
        eff = run["effective_lr"]
        rows.append([run["name"], _settings(run["kwargs"])] + [_e(eff[k - 1]) for k in r["marks"]]
                    + [_g(eff[-1] / eff[0], 3)])
    return [Table(f"Pitfall: AdaGrad's effective learning rate, {r['steps']} steps",
                  ["optimizer", "settings"] + [f"step {k}" for k in r["marks"]] + ["last/first"],
                  rows, ["effective learning rate: lr / (sqrt(accumulator) + eps), "
                         "mean over parameters", r["explanation"]])]


def eps_sensitivity(r):
    rows = [[f"{eps:g}"] + [_g(r["mse"][repr(s)][i]) for s in r["scales"]]
            for i, eps in enumerate(r["eps"])]
    return [Table(f"Pitfall: Adam's eps, lr {r['lr']:g}, {r['epochs']} epochs "
                  f"(full-data MSE; least squares {_g(r['lstsq_mse'])})",
                  ["eps"] + [f"loss x {s:g}" for s in r["scales"]], rows,
                  ["loss x s: the gradient multiplied by s; the MSE shown is always unscaled",
                   r["explanation"]])]


def bias_correction(r):
    runs = r["runs"]
    size = Table("Pitfall: Adam's bias correction, first steps (|delta theta| / lr, "
                 "RMS over parameters)", ["step"] + [run["name"] for run in runs],
                 [[str(k)] + [_g(run["update_size"][k - 1], 3) for run in runs]
                  for k in r["marks"]])
    mse = Table(f"... and the full-data MSE (at the start: {_g(r['start_mse'], 4)})",
                ["step"] + [run["name"] for run in runs],
                [[str(k)] + [_g(run["mse"][k - 1], 4) for run in runs] for k in r["marks"]],
                ["without correction: adaptopt.Adam with lr(t) = lr (1-b1^t)/sqrt(1-b2^t), "
                 "which leaves lr m/(sqrt(v) + eps sqrt(1-b2^t))", r["explanation"]])
    return [size, mse]


def weight_decay(r):
    rows = [[f"{row['weight_decay']:g}", _g(row["adam_l2_norm"], 5), _g(row["adamw_norm"], 5),
             _g(row["ridge_norm"], 5), _g(row["adam_l2_mse"], 5), _g(row["adamw_mse"], 5)]
            for row in r["rows"]]
    return [Table(f"Pitfall: Adam + L2 vs AdamW, lr {r['lr']:g}, {r['epochs']} epochs",
                  ["weight_decay", "|theta| Adam+L2", "|theta| AdamW", "|theta| ridge",
                   "MSE Adam+L2", "MSE AdamW"], rows,
                  ["ridge: the minimiser of MSE + wd/2 |theta|^2, the penalty Adam's L2 "
                   "term is the gradient of", r["explanation"]])]


def ill_conditioned(r):
    tables = []
    for case in r["cases"]:
        rows = [[run["name"], _settings(run["kwargs"])] + [_e(run["f"][k]) for k in r["marks"]]
                for run in case["runs"]]
        tables.append(Table(f"Pitfall: ill-conditioned quadratic, curvatures "
                            f"{r['h'][0]:g} and {r['h'][1]:g}, {case['name']}, from "
                            f"({r['x0'][0]:g}, {r['x0'][1]:g})",
                            ["optimizer", "settings"] + [f"f after {k}" for k in r["marks"]],
                            rows))
    tables[-1].notes.append(r["explanation"])
    return tables


def low_precision(r):
    marks = [0, len(r["runs"][0]["mse"]) // 4, len(r["runs"][0]["mse"]) // 2,
             len(r["runs"][0]["mse"]) - 1]
    steps = [min(k * r["every"], r["steps"] - 1) + 1 for k in marks]
    rows = [[run["name"]] + [_g(run["mse"][k], 5) for k in marks] + [_g(run["moved"], 4)]
            for run in r["runs"]]
    return [Table(f"Small updates on {r['dtype']} weights: Adam, lr {r['lr']:g}, full batch "
                  f"(full-data MSE; at the start {_g(r['start_mse'], 5)})",
                  ["weights"] + [f"step {k}" for k in steps] + ["mean |theta|"], rows,
                  [r["explanation"]])]


TABLES = {
    "linear-regression": linear_regression,
    "tutorial-rules": tutorial_rules,
    "quadratic-1d": quadratic_1d,
    "adagrad-collapse": adagrad_collapse,
    "eps-sensitivity": eps_sensitivity,
    "bias-correction": bias_correction,
    "weight-decay": weight_decay,
    "ill-conditioned": ill_conditioned,
    "low-precision": low_precision,
}
