"""Inverted dropout in Numba: y = x * mask / (1 - p) in one pass (NumPy's takes two, with a
temporary). The arithmetic is the reference's, operation for operation, so the results are
identical to it, NaN and infinity included (a dropped NaN stays NaN, as NaN * 0 does).
"""
import numpy as np
from numba import njit

from .. import _common
from ._config import CACHE


@njit(cache=CACHE)
def _masked_scale(values, mask, keep, out):
    """out[i] = values[i] * mask[i] / keep; all flat, mask bool."""
    one, zero = values.dtype.type(1), values.dtype.type(0)
    for i in range(values.size):
        out[i] = values[i] * (one if mask[i] else zero) / keep


def _apply(values, mask, keep):
    out = np.empty(values.shape, keep.dtype)
    _masked_scale(np.ascontiguousarray(values, keep.dtype).reshape(-1),
                  np.ascontiguousarray(mask).reshape(-1), keep, out.reshape(-1))
    return out


def dropout_forward(x, mask, p):
    """x (any shape), mask (bool, x.shape; True = keep), 0 <= p < 1 -> y (x.shape), cache."""
    _common.check_dropout(x, mask, p)
    keep = x.dtype.type(1 - p)
    return _apply(x, mask, keep), (mask, keep)


def dropout_backward(dy, cache):
    """dy (x.shape) -> dx = dy * mask / (1 - p)."""
    mask, keep = cache
    return _apply(dy, mask, keep)
