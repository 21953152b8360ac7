"""Rectified linear unit, y = max(x, 0)."""
import numpy as np

from .. import _common


def relu_forward(x):
    """x (any shape) -> y = max(x, 0) (same shape), cache."""
    _common.check_float("x", x)
    return np.maximum(x, 0), x


def relu_backward(dy, cache):
    """dy (same shape as x) -> dx: dy where x > 0, else 0."""
    x = cache
    return np.where(x > 0, dy, 0)
