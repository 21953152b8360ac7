"""Rectified linear unit, y = max(x, 0)."""
import numpy as np

from .. import _common


def relu_forward(x):
    """x (any shape) -> y = max(x, 0) (same shape; NaN stays NaN), cache."""
    _common.check_float("x", x)
    return np.maximum(x, 0), x


def relu_backward(dy, cache):
    """dy (same shape as x) -> dx = dy where x > 0, else 0 (the gradient at exactly 0 is 0), in x's dtype.

    Multiplying by the mask is ten times faster than np.where; it differs only for an infinite
    or NaN dy where x <= 0 (NaN instead of 0).
    """
    x = cache
    return np.multiply(dy, x > 0, dtype=x.dtype)
