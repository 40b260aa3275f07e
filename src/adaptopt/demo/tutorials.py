"""The tutorials' own hand-written NumPy update rules, kept as they wrote them.

The demo's experiments come from two tutorials: ``REGRESSION_TUTORIAL``
(mini-batch linear regression with AdaGrad, RMSprop and Adam, and a list of
common pitfalls) and ``QUADRATIC_TUTORIAL`` (Adagrad and RMSProp on the 1-D
quadratic).  Two changes only, neither of which alters a single rounding:

* random draws come from ``rng`` (a ``numpy.random.RandomState``, or the
  ``numpy.random`` module itself as in the tutorial) instead of the global state,
  so the demo can replay the same draws for adaptopt's twin run;
* ``n_epochs``/``steps`` and the initial values are parameters.

Their conventions, which adaptopt's optimizers are configured to match in
the demo (see ``experiments.tutorial_rules``):

* eps outside the square root: ``lr / (sqrt(G) + eps)`` -- as torch;
* RMSprop's decay is called ``beta`` (0.9): torch's ``alpha``, whose default
  is 0.99;
* Adam divides ``m_hat / (sqrt(v_hat) + eps)``; torch computes
  ``(lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)``: algebraically equal,
  rounded differently;
* Adam's ``t`` is reset to 0 at every epoch (``t = 0`` inside the epoch
  loop) while ``m`` and ``v`` carry on, so the bias corrections restart each
  epoch; torch's step count never restarts;
* the epoch loss is the sum of the batch losses (measured before each
  update) divided by ``n_samples // batch_size`` (31 for 1000 samples), not
  by the number of batches (32: the last batch has 8 samples).
"""

import numpy as np

__all__ = ["REGRESSION_TUTORIAL", "QUADRATIC_TUTORIAL", "adagrad_optimizer", "rmsprop_optimizer",
           "adam_optimizer",
           "adagrad_update", "rmsprop_update", "quadratic_grad"]

#: The tutorials the experiments come from, by title.
REGRESSION_TUTORIAL = "AdaGrad, RMSprop, and Adam"
QUADRATIC_TUTORIAL = "RMSProp and Adagrad"


def adagrad_optimizer(X, y, lr=0.01, epsilon=1e-8, n_epochs=100, batch_size=32, rng=np.random):
    """AdaGrad optimizer (the tutorial "AdaGrad, RMSprop, and Adam")."""
    n_samples, n_features = X.shape
    theta = rng.randn(n_features) * 0.01
    accumulated_squared = np.zeros(n_features)
    loss_history = []
    for epoch in range(n_epochs):
        indices = rng.permutation(n_samples)
        epoch_loss = 0
        for i in range(0, n_samples, batch_size):
            X_batch = X[indices[i:i+batch_size]]
            y_batch = y[indices[i:i+batch_size]]
            y_pred = X_batch @ theta
            gradient = (2 / len(X_batch)) * X_batch.T @ (y_pred - y_batch)
            # Accumulate squared gradients
            accumulated_squared += gradient ** 2
            # Adaptive update
            adapted_lr = lr / (np.sqrt(accumulated_squared) + epsilon)
            theta = theta - adapted_lr * gradient
            epoch_loss += np.mean((y_pred - y_batch) ** 2)
        loss_history.append(epoch_loss / (n_samples // batch_size))
    return theta, loss_history


def rmsprop_optimizer(X, y, lr=0.001, beta=0.9, epsilon=1e-8,
                      n_epochs=100, batch_size=32, rng=np.random):
    """RMSprop optimizer (the tutorial "AdaGrad, RMSprop, and Adam")."""
    n_samples, n_features = X.shape
    theta = rng.randn(n_features) * 0.01
    moving_avg_squared = np.zeros(n_features)
    loss_history = []
    for epoch in range(n_epochs):
        indices = rng.permutation(n_samples)
        epoch_loss = 0
        for i in range(0, n_samples, batch_size):
            X_batch = X[indices[i:i+batch_size]]
            y_batch = y[indices[i:i+batch_size]]
            y_pred = X_batch @ theta
            gradient = (2 / len(X_batch)) * X_batch.T @ (y_pred - y_batch)
            # Exponential moving average of squared gradients
            moving_avg_squared = beta * moving_avg_squared + (1 - beta) * (gradient ** 2)
            # Adaptive update
            adapted_lr = lr / (np.sqrt(moving_avg_squared) + epsilon)
            theta = theta - adapted_lr * gradient
            epoch_loss += np.mean((y_pred - y_batch) ** 2)
        loss_history.append(epoch_loss / (n_samples // batch_size))
    return theta, loss_history


def adam_optimizer(X, y, lr=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                   n_epochs=100, batch_size=32, rng=np.random):
    """Adam optimizer with bias correction (the same tutorial; note ``t = 0`` per epoch)."""
    n_samples, n_features = X.shape
    theta = rng.randn(n_features) * 0.01
    m = np.zeros(n_features)  # First moment
    v = np.zeros(n_features)  # Second moment
    loss_history = []
    for epoch in range(n_epochs):
        indices = rng.permutation(n_samples)
        epoch_loss = 0
        t = 0
        for i in range(0, n_samples, batch_size):
            t += 1
            X_batch = X[indices[i:i+batch_size]]
            y_batch = y[indices[i:i+batch_size]]
            y_pred = X_batch @ theta
            gradient = (2 / len(X_batch)) * X_batch.T @ (y_pred - y_batch)
            # Update biased first moment estimate
            m = beta1 * m + (1 - beta1) * gradient
            # Update biased second raw moment estimate
            v = beta2 * v + (1 - beta2) * (gradient ** 2)
            # Compute bias-corrected estimates
            m_hat = m / (1 - beta1 ** t)
            v_hat = v / (1 - beta2 ** t)
            # Update parameters
            theta = theta - lr * m_hat / (np.sqrt(v_hat) + epsilon)
            epoch_loss += np.mean((y_pred - y_batch) ** 2)
        loss_history.append(epoch_loss / (n_samples // batch_size))
    return theta, loss_history


# --- the tutorial "RMSProp and Adagrad": f(x) = 0.5 * x^2
def quadratic_grad(x):
    return x


def adagrad_update(x, lr, G, epsilon=1e-8):
    g = quadratic_grad(x)
    G += g**2
    x_new = x - lr / (np.sqrt(G) + epsilon) * g
    return x_new, G


def rmsprop_update(x, lr, Eg2, gamma=0.9, epsilon=1e-8):
    g = quadratic_grad(x)
    Eg2 = gamma * Eg2 + (1 - gamma) * g**2
    x_new = x - lr / (np.sqrt(Eg2) + epsilon) * g
    return x_new, Eg2
