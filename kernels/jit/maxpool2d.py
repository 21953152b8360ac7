"""Max-pooling in Numba, one thread per block of (n, c) planes.

The forward pass records, for every window, the flat position (within its plane) of the window's
first maximum in row-major order; a NaN counts as larger than any number, so a window holding
a NaN yields NaN and sends its gradient to its first NaN. The backward pass zeroes each plane of
dx and adds every window's gradient at its recorded position, so overlapping windows accumulate.
Planes are disjoint, so threads never write to the same element. The comparisons are written
without branches (a branch on random data is mispredicted half the time), and the common
2 x 2 window with stride 2 is unrolled.
"""
import numpy as np
from numba import njit, prange

from .. import _common
from ._config import CACHE, prange_only


@njit(cache=CACHE, inline="always")
def _wins(v, best):
    """Whether v replaces the running maximum best: larger, or the first NaN (no branches)."""
    return (v > best) | ((v != v) & (best == best))


@njit(cache=CACHE, inline="always")
def _first_maximum_of_four(v0, v1, v2, v3, at0, at1, at2, at3):
    """The maximum of a 2 x 2 window's values v0 v1 / v2 v3 and the position at_i of the first
    one holding it in that order (NaN wins, ``_wins``), without branches: for the fused kernels
    that pool their own outputs (phases.py, winograd.py), whose loops the compiler vectorises.
    (``_pool_plane``'s own 2 x 2 loop, over strided reads, ran 2x slower through it.)"""
    best, at = v0, at0
    take = _wins(v1, best)
    best, at = (v1 if take else best), (at1 if take else at)
    take = _wins(v2, best)
    best, at = (v2 if take else best), (at2 if take else at)
    take = _wins(v3, best)
    return (v3 if take else best), (at3 if take else at)


@njit(cache=CACHE, inline="always")
def _relu_window(best, at, zero):
    """A window's maximum best (at flat index at) through the ReLU, for the fused conv-pool
    kernels: (best, at), or (zero, -1) when best is not > 0, a dead window that passes no
    gradient. relu(NaN) stays NaN and passes none either: (NaN, -1)."""
    dead = not best > 0
    return (zero if dead and best == best else best), (-1 if dead else at)


@njit(cache=CACHE, inline="always")
def _pool_plane(plane, size, stride, y, where):
    """y[i, j] = max of ``plane``'s window (i, j); where[i, j] = flat index h * W + w of its first maximum.

    plane (H, W); y, where (OH, OW). Shared with the fused conv-pool kernel (``fused.py``).
    """
    OH, OW = y.shape
    W = plane.shape[1]
    for i in range(OH):
        h0 = i * stride
        y_row, where_row = y[i], where[i]
        if size == 2 and stride == 2:
            # The common case, unrolled: a b / c d, taken in this order.
            top, bottom = plane[h0], plane[h0 + 1]
            for j in range(OW):
                best, at = top[2 * j], h0 * W + 2 * j
                v = top[2 * j + 1]
                best, at = (v, at + 1) if _wins(v, best) else (best, at)
                v = bottom[2 * j]
                best, at = (v, (h0 + 1) * W + 2 * j) if _wins(v, best) else (best, at)
                v = bottom[2 * j + 1]
                best, at = (v, (h0 + 1) * W + 2 * j + 1) if _wins(v, best) else (best, at)
                y_row[j], where_row[j] = best, at
        else:
            for j in range(OW):
                w0 = j * stride
                best, at = plane[h0, w0], h0 * W + w0
                for h in range(h0, h0 + size):
                    for w in range(w0, w0 + size):
                        v = plane[h, w]
                        best, at = (v, h * W + w) if _wins(v, best) else (best, at)
                y_row[j], where_row[j] = best, at


@njit(parallel=prange_only(), cache=CACHE)
def _forward(x, size, stride, OH, OW):
    """y (N, C, OH, OW) and argmax (N, C, OH, OW) int32: flat index h * W + w of each window's maximum."""
    N, C, H, W = x.shape
    planes = x.reshape(N * C, H, W)
    y = np.empty((N * C, OH, OW), x.dtype)
    argmax = np.empty((N * C, OH, OW), np.int32)
    for q in prange(N * C):
        _pool_plane(planes[q], size, stride, y[q], argmax[q])
    return y.reshape(N, C, OH, OW), argmax.reshape(N, C, OH, OW)


@njit(parallel=prange_only(), cache=CACHE)
def _backward(dy, argmax, H, W):
    """dx (N, C, H, W): each window's gradient dy added at its argmax position."""
    N, C, OH, OW = dy.shape
    dy_planes = dy.reshape(N * C, OH * OW)
    argmax_planes = argmax.reshape(N * C, OH * OW)
    dx = np.empty((N * C, H * W), dy.dtype)
    for q in prange(N * C):
        dx[q, :] = 0
        for k in range(OH * OW):
            dx[q, argmax_planes[q, k]] += dy_planes[q, k]
    return dx.reshape(N, C, H, W)


def maxpool2d_forward(x, size=2, stride=None):
    """Max over size x size windows moved by ``stride`` (None: ``size``).

    x (N, C, H, W) -> y (N, C, OH, OW), cache.
    """
    stride, OH, OW = _common.check_maxpool2d(x, size, stride)
    x = np.ascontiguousarray(x)
    y, argmax = _forward(x, int(size), int(stride), OH, OW)
    return y, (argmax, x.shape, x.dtype)


def maxpool2d_backward(dy, cache):
    """dy (N, C, OH, OW) -> dx (N, C, H, W), each window's gradient routed to its first maximum."""
    argmax, (N, C, H, W), dtype = cache
    if dy.shape != argmax.shape:
        raise ValueError(f"dy must have shape {argmax.shape}, got {dy.shape}")
    return _backward(np.ascontiguousarray(dy, dtype=dtype), argmax, H, W)
