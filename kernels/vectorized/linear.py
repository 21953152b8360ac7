"""Fully connected layer, y = x @ w + b, as two BLAS products."""
import numpy as np

from .. import _common


def linear_forward(x, w, b):
    """x (N, D), w (D, F), b (F,) -> y (N, F), cache."""
    _common.check_linear(x, w, b)
    y = x @ w
    y += b
    return y, (x, w)


def linear_backward(dy, cache, input_grad=True):
    """dy (N, F) -> dx (N, D) (None if not ``input_grad``), dw (D, F), db (F,)."""
    x, w = cache
    dx = dy @ w.T if input_grad else None
    dw = x.T @ dy
    db = dy.sum(axis=0)
    return dx, dw, db
