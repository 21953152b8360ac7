"""Rectified linear unit, elementwise: y = max(x, 0)."""
import numpy as np

from .._common import check_float


def relu_forward(x):
    """x (any shape)  ->  y = max(x, 0) (x's shape), cache. NaN stays NaN."""
    check_float("x", x)
    return np.maximum(x, 0), x


def relu_backward(dy, cache):
    """dy (x's shape)  ->  dx = dy where x > 0, else 0 (the gradient at exactly 0 is 0, as in PyTorch)."""
    x = cache
    return np.where(x > 0, dy, 0).astype(x.dtype, copy=False)
