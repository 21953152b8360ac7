"""ReLU in Numba: one pass over memory each way.

NumPy's backward (``dy * (x > 0)``) writes a boolean temporary and reads it back; here each
element of x and dy is read once and each result written once. One thread: at the model
zoo's sizes (up to 256 x 512) a pass takes microseconds, less than waking a second thread.
Results equal the reference's exactly, NaN included (forward: NaN stays NaN; backward: 0
where x is not > 0, whatever dy holds).
"""
import numpy as np
from numba import njit

from .. import _common
from ._config import CACHE


@njit(cache=CACHE)
def _forward(x, y):
    """y[i] = max(x[i], 0), NaN kept; x, y flat."""
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        y[i] = zero if v <= zero else v


@njit(cache=CACHE)
def _backward(dy, x, dx):
    """dx[i] = dy[i] where x[i] > 0, else 0; all flat."""
    zero = x.dtype.type(0)
    for i in range(x.size):
        dx[i] = dy[i] if x[i] > zero else zero


def relu_forward(x):
    """x (any shape) -> y = max(x, 0) (x's shape; NaN stays NaN), cache."""
    _common.check_float("x", x)
    y = np.empty(x.shape, x.dtype)
    _forward(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y, x


def relu_backward(dy, cache):
    """dy (x's shape) -> dx = dy where x > 0, else 0."""
    x = cache
    dx = np.empty(x.shape, x.dtype)
    _backward(np.ascontiguousarray(dy, x.dtype).reshape(-1), np.ascontiguousarray(x).reshape(-1),
              dx.reshape(-1))
    return dx
