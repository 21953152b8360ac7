"""Fully connected layer, one sample at a time: y[n] = x[n] @ w + b."""
import numpy as np

from .._common import check_linear


def linear_forward(x, w, b):
    """Affine map of every sample.

    x (N, D), w (D, F), b (F,)  ->  y (N, F), cache
    y[n, f] = sum over d of x[n, d] * w[d, f]  +  b[f]
    """
    check_linear(x, w, b)
    N = x.shape[0]
    F = w.shape[1]
    y = np.empty((N, F), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            y[n, f] = np.dot(x[n], w[:, f]) + b[f]
    return y, (x, w)


def linear_backward(dy, cache, input_grad=True):
    """Gradients of linear_forward.

    dy (N, F)  ->  dx (N, D), dw (D, F), db (F,)
    dx[n] = w @ dy[n];   dw = sum over n of outer(x[n], dy[n]);   db = sum over n of dy[n]
    ``input_grad=False``: dx is not computed and is None (the input is data).
    """
    x, w = cache
    N = x.shape[0]
    dx = np.empty(x.shape, dtype=x.dtype) if input_grad else None
    dw = np.zeros(w.shape, dtype=x.dtype)
    db = np.zeros(w.shape[1], dtype=x.dtype)
    for n in range(N):
        if input_grad:
            dx[n] = w @ dy[n]
        dw += np.outer(x[n], dy[n])
        db += dy[n]
    return dx, dw, db
