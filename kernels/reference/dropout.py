"""Inverted dropout with a mask drawn by the caller: y = x * mask / (1 - p)."""
from .._common import check_dropout


def dropout_forward(x, mask, p):
    """Zero the dropped entries and scale the kept ones so that E[y] = x.

    x (any shape), mask (bool, x's shape; True = keep), 0 <= p < 1  ->  y (x's shape), cache
    """
    check_dropout(x, mask, p)
    keep = x.dtype.type(1 - p)
    return x * mask / keep, (mask, keep)


def dropout_backward(dy, cache):
    """dy (x's shape)  ->  dx = dy * mask / (1 - p)."""
    mask, keep = cache
    return (dy * mask / keep).astype(keep.dtype, copy=False)
