"""Linear layers with a narrow output in Numba (F <= 16: a classifier's last layer); wider
ones go to the ``vectorized`` backend's BLAS products.

With ten outputs a BLAS product has almost nothing to block: seed_cnn's (64, 1352) @ (1352, 10)
and its two gradient products took 95 us together in OpenBLAS, and they woke OpenBLAS's second
thread, whose idle spinning then slowed the convolution that follows. Here each is a loop
over long contiguous rows, with the weights transposed to (F, D) so that every inner loop runs
along D, and four rows per pass so that each load feeds four multiply-adds:
- forward: y[n, f] = b[f] + dot(x[n], w_t[f]), four samples' dot products at once;
- backward: dw_t[f] += sum of dy[n, f] * x[n] over four samples, and
  dx[n] = sum over f of dy[n, f] * w_t[f], four outputs at a time.
One thread: the three loops take tens of microseconds, about what waking a thread costs.
"""
import numpy as np
from numba import njit

from .. import _common
from ..vectorized import linear as vectorized_linear
from ._config import CACHE, FASTMATH

NARROW = 16  # largest F served here


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _four_rows(a, i, zeros):
    """Rows i .. i + 3 of a, ``zeros`` (a row of zeros) standing in for rows past the end, so
    that a missing row adds 0 * 0 and never 0 * inf = NaN."""
    n = a.shape[0]
    return (a[i], a[i + 1] if i + 1 < n else zeros, a[i + 2] if i + 2 < n else zeros,
            a[i + 3] if i + 3 < n else zeros)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _four_entries(a, i, j):
    """a[i, j] .. a[i + 3, j], zero past the end of a's first axis."""
    zero = a.dtype.type(0)
    n = a.shape[0]
    return (a[i, j], a[i + 1, j] if i + 1 < n else zero, a[i + 2, j] if i + 2 < n else zero,
            a[i + 3, j] if i + 3 < n else zero)


@njit(cache=CACHE, fastmath=FASTMATH)
def _forward(x, w_t, b, y):
    """y[n, f] = b[f] + sum over d of x[n, d] * w_t[f, d]; x (N, D), w_t (F, D), b (F,), y (N, F).
    Four samples at a time share each load of w_t."""
    N, D = x.shape
    F = w_t.shape[0]
    zero = x.dtype.type(0)
    zeros = np.zeros(D, x.dtype)
    for n in range(0, N, 4):
        x0, x1, x2, x3 = _four_rows(x, n, zeros)
        for f in range(F):
            w = w_t[f]
            s0 = s1 = s2 = s3 = zero
            for d in range(D):
                s0 += x0[d] * w[d]
                s1 += x1[d] * w[d]
                s2 += x2[d] * w[d]
                s3 += x3[d] * w[d]
            for a, total in enumerate((s0, s1, s2, s3)):
                if n + a < N:
                    y[n + a, f] = total + b[f]


@njit(cache=CACHE, fastmath=FASTMATH)
def _backward(dy, x, w_t, input_grad, dx, dw_t, db):
    """dw_t (F, D) = dy.T @ x, db (F,) = dy summed over n, and if ``input_grad`` dx (N, D) = dy @ w_t.
    Four samples (for dw_t) or four outputs (for dx) per pass over a row."""
    N, D = x.shape
    F = w_t.shape[0]
    zeros = np.zeros(D, x.dtype)
    dw_t[:] = 0
    db[:] = 0
    for n in range(0, N, 4):
        x0, x1, x2, x3 = _four_rows(x, n, zeros)
        for f in range(F):
            g0, g1, g2, g3 = _four_entries(dy, n, f)
            db[f] += g0 + g1 + g2 + g3
            o = dw_t[f]
            for d in range(D):
                o[d] += g0 * x0[d] + g1 * x1[d] + g2 * x2[d] + g3 * x3[d]
    if not input_grad:
        return
    dy_t = dy.T
    for n in range(N):
        o = dx[n]
        o[:] = 0
        for f in range(0, F, 4):
            w0, w1, w2, w3 = _four_rows(w_t, f, zeros)
            g0, g1, g2, g3 = _four_entries(dy_t, f, n)
            for d in range(D):
                o[d] += g0 * w0[d] + g1 * w1[d] + g2 * w2[d] + g3 * w3[d]


def linear_forward(x, w, b):
    """x (N, D), w (D, F), b (F,) -> y (N, F), cache."""
    _common.check_linear(x, w, b)
    if w.shape[1] > NARROW:
        y, cache = vectorized_linear.linear_forward(x, w, b)
        return y, (vectorized_linear, cache)
    x, w_t = np.ascontiguousarray(x), np.ascontiguousarray(w.T)
    y = np.empty((x.shape[0], w.shape[1]), x.dtype)
    _forward(x, w_t, np.ascontiguousarray(b), y)
    return y, (None, (x, w_t))


def linear_backward(dy, cache, input_grad=True):
    """dy (N, F) -> dx (N, D) (None if not ``input_grad``), dw (D, F), db (F,)."""
    served_by, cache = cache
    if served_by is not None:
        return served_by.linear_backward(dy, cache, input_grad)
    x, w_t = cache
    dx = np.empty(x.shape, x.dtype) if input_grad else np.empty((0, 0), x.dtype)
    dw_t, db = np.empty_like(w_t), np.empty(w_t.shape[0], x.dtype)
    _backward(np.ascontiguousarray(dy, x.dtype), x, w_t, input_grad, dx, dw_t, db)
    return (dx if input_grad else None), np.ascontiguousarray(dw_t.T), db
