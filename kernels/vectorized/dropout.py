"""Inverted dropout with a mask drawn by the caller: y = x * mask / (1 - p)."""
import numpy as np

from .. import _common


def dropout_forward(x, mask, p):
    """x (any shape), mask (bool, x.shape), 0 <= p < 1 -> y (x.shape), cache."""
    _common.check_dropout(x, mask, p)
    scale = x.dtype.type(1.0 / (1.0 - float(p)))
    y = np.multiply(x, mask)
    y *= scale
    return y, (mask, scale)


def dropout_backward(dy, cache):
    """dy (x.shape) -> dx = dy * mask / (1 - p)."""
    mask, scale = cache
    dx = np.multiply(dy, mask)
    dx *= scale
    return dx
