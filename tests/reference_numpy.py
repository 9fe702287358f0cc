"""An independent reference: per-example gradients of an MLP in plain NumPy.

Forward and backward pass for one example at a time, written out with the
textbook chain rule (delta_L from the loss, delta_{l-1} = (W_l delta_l) * act'(z_{l-1}),
dW_l = a_l (outer) delta_l, db_l = delta_l). No JAX anywhere in this file.
"""

import numpy as np


def _act(name, z):
    return np.tanh(z) if name == "tanh" else np.maximum(z, 0.0)


def _act_prime(name, z):
    return 1.0 - np.tanh(z) ** 2 if name == "tanh" else (z > 0).astype(z.dtype)


def per_example_grads(layers, activation, loss, x, y):
    """``layers``: list of (W, b) float64 arrays. Returns, per example, a list of (dW, db)."""
    out_grads = []
    L = len(layers)
    for i in range(x.shape[0]):
        a, zs = [x[i]], []
        h = x[i]
        for l, (W, b) in enumerate(layers):
            z = h @ W + b
            zs.append(z)
            h = z if l == L - 1 else _act(activation, z)
            a.append(h)
        o = h
        if loss == "mse":
            delta = 2.0 * (o - y[i]) / o.shape[0]
        else:
            p = np.exp(o - o.max())
            p /= p.sum()
            p[int(y[i])] -= 1.0
            delta = p
        grads = [None] * L
        for l in reversed(range(L)):
            grads[l] = (np.outer(a[l], delta), delta.copy())
            if l > 0:
                delta = (layers[l][0] @ delta) * _act_prime(activation, zs[l - 1])
        out_grads.append(grads)
    return out_grads


def example_loss(layers, activation, loss, x, y):
    """Per-example losses, shape (B,)."""
    h = x
    for l, (W, b) in enumerate(layers):
        z = h @ W + b
        h = z if l == len(layers) - 1 else _act(activation, z)
    if loss == "mse":
        return np.mean((h - y) ** 2, axis=1)
    m = h.max(axis=1, keepdims=True)
    logz = (m + np.log(np.exp(h - m).sum(axis=1, keepdims=True)))[:, 0]
    return logz - h[np.arange(len(y)), y.astype(int)]
