"""The demo's problems and the loops that run adaptopt's optimizers on them.

Everything is float64 and drawn from one ``numpy.random.RandomState`` per
experiment (the legacy generator, so ``RandomState(42)`` gives exactly the
numbers of the regression tutorial's ``np.random.seed(42)``), never the global state.
"""

import numpy as np

__all__ = ["regression_data", "train_regression", "full_mse", "run_quadratic",
           "reset_step_count"]


def regression_data(rng, n_samples=1000, n_features=10):
    """The regression tutorial's data: ``X``, ``y = X @ true_theta + noise``, ``true_theta``.

    Draws, in the tutorial's order: ``X = randn(n, d)``, ``true_theta = randn(d)*2``,
    ``noise = randn(n)*0.5``.
    """
    X = rng.randn(n_samples, n_features)
    true_theta = rng.randn(n_features) * 2
    y = X @ true_theta + rng.randn(n_samples) * 0.5
    return X, y, true_theta


def full_mse(X, y, theta):
    """Mean squared error over the whole data set."""
    r = X @ theta - y
    return float(np.mean(r * r))


def reset_step_count(opt):
    """Set every parameter's step count back to 0, keeping the moment buffers.

    Goes through ``state_dict``/``load_state_dict``, the public way to edit
    an optimizer's state; used to reproduce the regression tutorial's Adam, which restarts
    ``t`` (and so the bias corrections) at every epoch.
    """
    sd = opt.state_dict()
    for st in sd["state"].values():
        st["step"] = 0
    opt.load_state_dict(sd)


def train_regression(make_opt, X, y, rng, epochs, batch_size=32, grad_scale=1.0,
                     reset_each_epoch=False, on_step=None):
    """Mini-batch training of ``theta`` for the MSE, the way the regression tutorial does it.

    Consumes ``rng`` exactly as the tutorial's functions do: ``randn(d)*0.01`` for
    the start, then one ``permutation(n)`` per epoch.  The gradient is the
    tutorial's expression ``(2 / len(Xb)) * Xb.T @ (Xb @ theta - yb)`` times
    ``grad_scale`` (the loss scaled by that factor).  ``make_opt([theta])``
    builds the optimizer; ``on_step(step, theta, opt)`` runs after each update.

    Returns ``theta`` (the final parameters) and the per-epoch loss as the
    tutorial computes it: batch losses measured before each update, summed,
    divided by ``n // batch_size``.
    """
    n_samples, n_features = X.shape
    theta = rng.randn(n_features) * 0.01
    opt = make_opt([theta])
    losses = []
    step = 0
    for _ in range(epochs):
        indices = rng.permutation(n_samples)
        if reset_each_epoch and step:
            reset_step_count(opt)
        epoch_loss = 0.0
        for i in range(0, n_samples, batch_size):
            X_batch = X[indices[i:i + batch_size]]
            y_batch = y[indices[i:i + batch_size]]
            y_pred = X_batch @ theta
            gradient = (2 / len(X_batch)) * X_batch.T @ (y_pred - y_batch)
            if grad_scale != 1.0:
                gradient = gradient * grad_scale
            opt.step([gradient])
            step += 1
            if on_step is not None:
                on_step(step, theta, opt)
            epoch_loss += np.mean((y_pred - y_batch) ** 2)
        losses.append(float(epoch_loss / (n_samples // batch_size)))
    return theta, losses


def run_quadratic(make_opt, x0, h, steps, rotation=None):
    """Minimise ``f(x) = 0.5 * sum(h_i * z_i**2)``, ``z = R x`` (R: rotation).

    ``h`` holds the curvatures; with ``rotation`` (a square orthogonal matrix
    ``R``) the quadratic's axes are turned away from the coordinate axes, so
    ``grad f(x) = R.T @ (h * (R @ x))``.  Returns the visited points
    (``steps + 1`` rows, the start first) and ``f`` at each.
    """
    x = np.array(x0, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    opt = make_opt([x])
    path = [x.copy()]
    for _ in range(steps):
        if rotation is None:
            g = h * x
        else:
            g = rotation.T @ (h * (rotation @ x))
        opt.step([np.ascontiguousarray(g)])
        path.append(x.copy())
    path = np.array(path)
    z = path if rotation is None else path @ rotation.T
    f = 0.5 * np.sum(h * z * z, axis=1)
    return path, f
