"""adaptopt.demo: every experiment in quick mode against numbers computed here.

The oracles are written out in this file from the math (textbook update
rules, seed 001's and seed 003's own loops, closed forms for SGD on a
quadratic, the ridge solution), independently of the demo's code and of
adaptopt; the demo's numbers are never compared with copies of its own
output.  The plots are checked to be written as non-empty PNGs.
"""
import math

import numpy as np
import pytest

from adaptopt import demo
from adaptopt.demo import experiments

SEED = 42
QUICK_EPOCHS = 10
BATCH = 32
PNG = b"\x89PNG\r\n\x1a\n"


# --- oracles ------------------------------------------------------------------
def data(seed=SEED):
    """Seed 001's data from its own lines, on a RandomState (= np.random.seed)."""
    rs = np.random.RandomState(seed)
    X = rs.randn(1000, 10)
    true_theta = rs.randn(10) * 2
    y = X @ true_theta + rs.randn(1000) * 0.5
    return rs, X, y, true_theta


def copy_rng(rs):
    twin = np.random.RandomState()
    twin.set_state(rs.get_state())
    return twin


def mse(X, y, theta):
    return float(np.mean((X @ theta - y) ** 2))


class Textbook:
    """Update rules as written in the papers / torch docs, one per class."""

    def __init__(self, **hp):
        self.hp, self.t, self.s = hp, 0, {}

    def __call__(self, theta, g):
        self.t += 1
        return self.update(theta, g, self.t, self.s, **self.hp)


class Adagrad(Textbook):
    @staticmethod
    def update(theta, g, t, s, lr, eps=1e-10):
        s["G"] = s.get("G", 0) + g * g
        return theta - lr * g / (np.sqrt(s["G"]) + eps)


class RMSprop(Textbook):
    @staticmethod
    def update(theta, g, t, s, lr, alpha=0.99, eps=1e-8):
        s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g * g
        return theta - lr * g / (np.sqrt(s["v"]) + eps)


class Adam(Textbook):
    @staticmethod
    def update(theta, g, t, s, lr, b1=0.9, b2=0.999, eps=1e-8, l2=0.0, decoupled=0.0,
               corrected=True):
        theta = theta * (1 - lr * decoupled)
        g = g + l2 * theta
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        if corrected:
            return theta - lr * (s["m"] / (1 - b1 ** t)) / (np.sqrt(s["v"] / (1 - b2 ** t)) + eps)
        return theta - lr * s["m"] / (np.sqrt(s["v"]) + eps)


class SGDMomentum(Textbook):
    @staticmethod
    def update(theta, g, t, s, lr, mu):
        s["b"] = g if t == 1 else mu * s["b"] + g
        return theta - lr * s["b"]


def textbook_train(rule, X, y, rs, epochs, scale=1.0, on_step=None):
    """Seed 001's training loop (draws, batches, loss) with any update rule."""
    n = len(X)
    theta = rs.randn(X.shape[1]) * 0.01
    losses = []
    for _ in range(epochs):
        idx = rs.permutation(n)
        total = 0.0
        for i in range(0, n, BATCH):
            Xb, yb = X[idx[i:i + BATCH]], y[idx[i:i + BATCH]]
            r = Xb @ theta - yb
            theta = rule(theta, scale * (2 / len(Xb)) * (Xb.T @ r))
            if on_step is not None:
                on_step(theta, rule)
            total += np.mean(r ** 2)
        losses.append(total / (n // BATCH))
    return theta, losses


def seed001_loop(kind, X, y, rs, lr, epochs, beta=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """Seed 001's three hand-written functions, folded into one."""
    n_samples, n_features = X.shape
    theta = rs.randn(n_features) * 0.01
    a = np.zeros(n_features)
    m = np.zeros(n_features)
    losses = []
    for _ in range(epochs):
        indices = rs.permutation(n_samples)
        epoch_loss, t = 0, 0
        for i in range(0, n_samples, BATCH):
            t += 1
            Xb, yb = X[indices[i:i + BATCH]], y[indices[i:i + BATCH]]
            y_pred = Xb @ theta
            gradient = (2 / len(Xb)) * Xb.T @ (y_pred - yb)
            if kind == "adagrad":
                a += gradient ** 2
                theta = theta - lr / (np.sqrt(a) + epsilon) * gradient
            elif kind == "rmsprop":
                a = beta * a + (1 - beta) * (gradient ** 2)
                theta = theta - lr / (np.sqrt(a) + epsilon) * gradient
            else:
                m = beta1 * m + (1 - beta1) * gradient
                a = beta2 * a + (1 - beta2) * (gradient ** 2)
                m_hat, v_hat = m / (1 - beta1 ** t), a / (1 - beta2 ** t)
                theta = theta - lr * m_hat / (np.sqrt(v_hat) + epsilon)
            epoch_loss += np.mean((y_pred - yb) ** 2)
        losses.append(epoch_loss / (n_samples // BATCH))
    return theta, losses


@pytest.fixture(scope="module")
def quick():
    """Every experiment once, in quick mode."""
    return {name: demo.run(name, quick=True, seed=SEED) for name in demo.NAMES}


# --- 1 --------------------------------------------------------------------------
REGRESSION_RULES = {
    "Adagrad": lambda: Adagrad(lr=0.1),
    "RMSprop": lambda: RMSprop(lr=0.01),
    "Adam": lambda: Adam(lr=0.01),
    "SGD+momentum": lambda: SGDMomentum(lr=0.01, mu=0.9),
    "AdamW": lambda: Adam(lr=0.01, decoupled=0.01),
}


def test_linear_regression(quick):
    r = quick["linear-regression"]
    rs, X, y, true_theta = data()
    assert r["epochs"] == QUICK_EPOCHS
    assert [run["name"] for run in r["runs"]] == list(REGRESSION_RULES)
    np.testing.assert_array_equal(r["true_theta"], true_theta)
    for run in r["runs"]:   # one after the other on the seed's random stream
        theta, losses = textbook_train(REGRESSION_RULES[run["name"]](), X, y, rs, QUICK_EPOCHS)
        np.testing.assert_allclose(run["losses"], losses, rtol=1e-9, err_msg=run["name"])
        assert run["final_loss"] == run["losses"][-1]
        np.testing.assert_allclose(run["mse"], mse(X, y, theta), rtol=1e-9)
        np.testing.assert_allclose(run["distance"], np.linalg.norm(theta - true_theta), rtol=1e-7)
        assert run["losses"][-1] < run["losses"][0], run["name"]
    best = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(r["lstsq_mse"], mse(X, y, best), rtol=1e-12)
    assert all(run["mse"] >= r["lstsq_mse"] for run in r["runs"])


def test_linear_regression_seed_changes_the_data():
    a = demo.run("linear-regression", quick=True, seed=1)
    _, _, _, true_theta = data(1)
    np.testing.assert_array_equal(a["true_theta"], true_theta)


# --- 2 --------------------------------------------------------------------------
def test_seed_comparison(quick):
    r = quick["tutorial-rules"]
    rs, X, y, _ = data()
    rows = {row["name"]: row for row in r["rows"]}
    assert list(rows) == ["Adagrad", "RMSprop", "Adam", "Adam, t not reset"]
    # the seed script's order: each function continues the random stream
    starts = {}
    for kind, name, lr in (("adagrad", "Adagrad", 0.1), ("rmsprop", "RMSprop", 0.01),
                           ("adam", "Adam", 0.01)):
        starts[name] = copy_rng(rs)
        _, losses = seed001_loop(kind, X, y, rs, lr, QUICK_EPOCHS)
        row = rows[name]
        np.testing.assert_allclose(row["tutorial_losses"], losses, rtol=1e-12, err_msg=name)
        assert row["tutorial_loss"] == row["tutorial_losses"][-1]
        # adaptopt, configured to match, agrees to rounding
        np.testing.assert_allclose(row["adaptopt_losses"], losses, rtol=1e-10, err_msg=name)
        assert row["abs_diff"] == abs(row["adaptopt_loss"] - row["tutorial_loss"])
        assert row["abs_diff"] < 1e-10 and row["max_theta_diff"] < 1e-10
    # adaptopt's Adam without the seed's per-epoch restart of t: the textbook
    # Adam on the seed's Adam draws, and measurably different from the seed
    row = rows["Adam, t not reset"]
    assert row["tutorial_loss"] == rows["Adam"]["tutorial_loss"]
    _, losses = textbook_train(Adam(lr=0.01), X, y, starts["Adam"], QUICK_EPOCHS)
    np.testing.assert_allclose(row["adaptopt_losses"], losses, rtol=1e-9)
    assert row["abs_diff"] == pytest.approx(abs(losses[-1] - row["tutorial_loss"]), rel=1e-6)
    assert row["abs_diff"] > 1e-3


# --- 3 --------------------------------------------------------------------------
def test_quadratic_1d(quick):
    r = quick["quadratic-1d"]
    assert (r["x0"], r["lr"], r["steps"], r["marks"]) == (5.0, 1.0, 50, [10, 25, 50])
    runs = {run["name"]: run for run in r["runs"]}
    # seed 003's loops, as it writes them
    x_a, G, ada = 5.0, 0, [5.0]
    x_r, Eg2, rms = 5.0, 0, [5.0]
    for _ in range(50):
        g = x_a
        G += g ** 2
        x_a = x_a - 1.0 / (np.sqrt(G) + 1e-8) * g
        ada.append(x_a)
        g = x_r
        Eg2 = 0.9 * Eg2 + (1 - 0.9) * g ** 2
        x_r = x_r - 1.0 / (np.sqrt(Eg2) + 1e-8) * g
        rms.append(x_r)
    adam, x = Adam(lr=1.0), np.array([5.0])
    adam_traj = [5.0]
    for _ in range(50):
        x = adam(x, x.copy())
        adam_traj.append(float(x[0]))
    for name, traj in (("Adagrad", ada), ("RMSprop", rms), ("Adam", adam_traj)):
        np.testing.assert_allclose(runs[name]["trajectory"], traj, rtol=0, atol=1e-12, err_msg=name)
        for k in (10, 25, 50):
            assert runs[name]["at"][str(k)] == runs[name]["trajectory"][k]
    np.testing.assert_allclose(runs["Adagrad"]["tutorial_trajectory"], ada, rtol=0, atol=0)
    assert runs["RMSprop"]["tutorial_max_diff"] == pytest.approx(
        np.max(np.abs(np.array(runs["RMSprop"]["trajectory"]) - rms)), abs=1e-300)
    assert runs["Adam"]["tutorial_trajectory"] is None


# --- 4a -------------------------------------------------------------------------
def test_adagrad_collapse(quick):
    r = quick["adagrad-collapse"]
    rs, X, y, _ = data()
    steps = QUICK_EPOCHS * math.ceil(1000 / BATCH)
    assert r["steps"] == steps and r["marks"][-1] == steps
    for run, rule, lr, eps, key in ((r["runs"][0], Adagrad(lr=0.1), 0.1, 1e-10, "G"),
                                    (r["runs"][1], RMSprop(lr=0.01), 0.01, 1e-8, "v")):
        eff = []
        textbook_train(rule, X, y, copy_rng(rs), QUICK_EPOCHS,
                       on_step=lambda th, rl: eff.append(np.mean(lr / (np.sqrt(rl.s[key]) + eps))))
        np.testing.assert_allclose(run["effective_lr"], eff, rtol=1e-9, err_msg=run["name"])
    ada, rms = (np.array(run["effective_lr"]) for run in r["runs"])
    assert np.all(np.diff(ada) <= 0)            # AdaGrad's can only fall
    assert rms[-1] > 2 * rms.min()              # RMSprop's recovers


# --- 4b -------------------------------------------------------------------------
def test_eps_sensitivity(quick):
    r = quick["eps-sensitivity"]
    rs, X, y, _ = data()
    assert r["eps"] == [1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1]
    for scale in (1.0, 1e-3):
        for eps, got in zip(r["eps"], r["mse"][repr(scale)]):
            theta, _ = textbook_train(Adam(lr=0.01, eps=eps), X, y, copy_rng(rs),
                                      QUICK_EPOCHS, scale=scale)
            np.testing.assert_allclose(got, mse(X, y, theta), rtol=1e-8, err_msg=(scale, eps))
    # Adam is scale-free but for eps: loss x 1e-3 with eps e is loss x 1 with eps 1000 e
    small, unit = r["mse"]["0.001"], r["mse"]["1.0"]
    for i, eps in enumerate(r["eps"]):
        if 1000 * eps in r["eps"]:
            np.testing.assert_allclose(small[i], unit[r["eps"].index(1000 * eps)], rtol=1e-9)
    assert small[-1] > 10 * small[0]             # eps >> the gradient stalls Adam


# --- 4c -------------------------------------------------------------------------
def test_bias_correction(quick):
    r = quick["bias-correction"]
    rs, X, y, _ = data()
    steps = 100
    assert r["steps"] == steps and [run["lr"] for run in r["runs"]] == [0.01, 0.01, 0.1, 0.1]
    for run in r["runs"]:
        size, err = [], []
        prev = [copy_rng(rs).randn(10) * 0.01]

        def record(theta, rule):
            size.append(np.sqrt(np.mean((theta - prev[0]) ** 2)) / run["lr"])
            err.append(mse(X, y, theta))
            prev[0] = theta

        textbook_train(Adam(lr=run["lr"], corrected=run["corrected"]), X, y, copy_rng(rs),
                       math.ceil(steps / BATCH), on_step=record)
        # rtol: the demo's uncorrected Adam has eps*sqrt(1-b2^t) for eps
        np.testing.assert_allclose(run["update_size"], size[:steps], rtol=1e-5, err_msg=run["name"])
        np.testing.assert_allclose(run["mse"], err[:steps], rtol=1e-5, err_msg=run["name"])
        # step 1: |m_hat/sqrt(v_hat)| = 1; uncorrected (1-b1)/sqrt(1-b2)
        first = 1.0 if run["corrected"] else 0.1 / math.sqrt(0.001)
        assert run["update_size"][0] == pytest.approx(first, rel=1e-6)
    np.testing.assert_allclose(r["start_mse"], mse(X, y, copy_rng(rs).randn(10) * 0.01))


# --- 4d -------------------------------------------------------------------------
def ridge_norm(X, y, wd):
    """argmin mean((X t - y)^2) + wd/2 |t|^2, as an augmented least-squares problem."""
    n, d = X.shape
    A = np.vstack([X, math.sqrt(n * wd / 2) * np.eye(d)])
    b = np.concatenate([y, np.zeros(d)])
    return np.linalg.norm(np.linalg.lstsq(A, b, rcond=None)[0])


def test_weight_decay(quick):
    r = quick["weight-decay"]
    rs, X, y, _ = data()
    assert [row["weight_decay"] for row in r["rows"]] == [0.0, 0.001, 0.01, 0.1, 1.0]
    for row in r["rows"]:
        wd = row["weight_decay"]
        for key, rule in (("adam_l2", Adam(lr=0.01, l2=wd)),
                          ("adamw", Adam(lr=0.01, decoupled=wd))):
            theta, _ = textbook_train(rule, X, y, copy_rng(rs), QUICK_EPOCHS)
            np.testing.assert_allclose(row[key + "_norm"], np.linalg.norm(theta), rtol=1e-9)
            np.testing.assert_allclose(row[key + "_mse"], mse(X, y, theta), rtol=1e-9)
        np.testing.assert_allclose(row["ridge_norm"], ridge_norm(X, y, wd), rtol=1e-10)
    assert r["rows"][0]["adam_l2_norm"] == r["rows"][0]["adamw_norm"]   # wd = 0: both Adam


def test_weight_decay_full_reaches_ridge():
    """Fully trained, Adam + L2 ends at the ridge solution (within the noise of lr)."""
    r = experiments.weight_decay(quick=False, seed=SEED)
    _, X, y, _ = data()
    for row in r["rows"]:
        assert row["adam_l2_norm"] == pytest.approx(ridge_norm(X, y, row["weight_decay"]), rel=2e-3)
    # ... and AdamW does not: at wd = 1 it shrinks far more than the ridge penalty
    assert r["rows"][-1]["adamw_norm"] < 0.8 * r["rows"][-1]["ridge_norm"]


# --- 4e -------------------------------------------------------------------------
def test_ill_conditioned(quick):
    r = quick["ill-conditioned"]
    h, x0, steps = np.array([1.0, 100.0]), np.array([5.0, 1.0]), 100
    assert r["h"] == list(h) and r["x0"] == list(x0) and r["steps"] == steps
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    for case, R in zip(r["cases"], (np.eye(2), np.array([[c, -s], [s, c]]))):
        runs = {run["name"]: np.array(run["f"]) for run in case["runs"]}
        z0 = R @ x0                      # eigen-coordinates: independent 1-D problems
        t = np.arange(steps + 1)[:, None]
        # SGD: z_t = (1 - lr h)^t z0, in closed form
        z = (1 - 0.019 * h) ** t * z0
        np.testing.assert_allclose(runs["SGD"], 0.5 * np.sum(h * z * z, 1), rtol=1e-9)
        # heavy ball: [z_t, z_{t-1}] = M^t [z0, z0] with M = [[1+mu-lr h, -mu], [1, 0]]
        lr, mu = 0.01, 0.9
        f = []
        for k in t[:, 0]:
            zk = [np.linalg.matrix_power(np.array([[1 + mu - lr * hi, -mu], [1, 0]]), k)
                  @ np.array([zi, zi]) for hi, zi in zip(h, z0)]
            f.append(0.5 * sum(hi * v[0] ** 2 for hi, v in zip(h, zk)))
        np.testing.assert_allclose(runs["SGD+momentum"], f, rtol=1e-6, atol=1e-300)
        # the adaptive methods, iterated from their update rules
        for name, rule in (("Adagrad", Adagrad(lr=1.0)), ("RMSprop", RMSprop(lr=0.1)),
                           ("Adam", Adam(lr=0.1))):
            x, f = x0.copy(), [0.5 * np.sum(h * z0 * z0)]
            for _ in range(steps):
                x = rule(x, R.T @ (h * (R @ x)))
                zx = R @ x
                f.append(0.5 * np.sum(h * zx * zx))
            np.testing.assert_allclose(runs[name], f, rtol=1e-6, atol=1e-300, err_msg=name)
    aligned, rotated = ({run["name"]: run["f"][-1] for run in case["runs"]} for case in r["cases"])
    assert aligned["RMSprop"] < aligned["SGD+momentum"]
    assert rotated["RMSprop"] > rotated["SGD+momentum"]


# --- the registry, tables and plots ------------------------------------------------
def test_registry_and_errors():
    assert set(demo.NAMES) == set(demo.report.TABLES) == set(demo.plots.PLOTS)
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        demo.run("nope")


def test_tables_show_the_numbers(quick):
    text = "\n".join(str(t) for name in demo.NAMES for t in demo.tables(name, quick[name]))
    for run in quick["linear-regression"]["runs"]:
        assert f"{run['final_loss']:.6g}" in text
    for row in quick["tutorial-rules"]["rows"]:
        assert f"{row['abs_diff']:.2e}" in text
    for run in quick["quadratic-1d"]["runs"]:
        assert f"{run['at']['50']:.6g}" in text
    for name in demo.NAMES:
        if "explanation" in quick[name]:
            assert quick[name]["explanation"] in text


def test_plots_are_written(quick, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "new"                      # created by plot()
    for name in demo.NAMES:
        path = demo.plot(name, quick[name], str(out))
        assert path == demo.plot_path(name, str(out))
        with open(path, "rb") as f:
            content = f.read()
        assert content.startswith(PNG) and len(content) > 5000, name
    assert len(list(out.glob("*.png"))) == len(demo.NAMES)
