"""Inverted dropout, y = x * mask / (1 - p), and the random keep-mask it multiplies by."""
import math

import numpy as np

from .. import _common
from .._common import check_dropout

_WORD = 2**64 - 1  # reduce modulo 2**64 with "& _WORD"


def dropout_mask(shape, p, seed):
    """A random keep-mask: each element False (dropped) with probability p, independently.

    shape (tuple), 0 <= p < 1, seed (integer in [0, 2**64))  ->  mask (bool, shape; True = keep)
    Element i (flat, C order) takes the i-th output z of a SplitMix64 generator started from
    ``seed`` (see ``_common``): it is dropped when the top 32 bits of z are below
    round(p * 2**32). The same seed always gives the same mask, in every backend.
    """
    threshold = _common.dropout_mask_threshold(shape, p, seed)
    mask = np.empty(shape, dtype=bool)
    flat = mask.reshape(-1)
    state = seed
    for i in range(math.prod(shape)):
        state = (state + _common.SPLITMIX64_INCREMENT) & _WORD
        z = ((state ^ (state >> 30)) * _common.SPLITMIX64_MULTIPLIER_1) & _WORD
        z = ((z ^ (z >> 27)) * _common.SPLITMIX64_MULTIPLIER_2) & _WORD
        z ^= z >> 31
        flat[i] = (z >> 32) >= threshold
    return mask


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
