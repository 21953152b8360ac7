"""Linear layers with a narrow output in Numba (F <= 16: a classifier's last layer); wider
ones go to the ``vectorized`` backend's BLAS products.

Why, when OpenBLAS is about as fast on these products in isolation (seed_cnn's (64, 1352) @
(1352, 10) and its two gradient products: 96 us in OpenBLAS, 128 us here): each BLAS call wakes
OpenBLAS's second thread, which then spins while the Numba convolution that follows wants its
core. With its head here, seed_cnn's training step makes no BLAS call at all (its epoch was 35%
slower with the head in BLAS), and an MLP's step is as fast either way. Each product is a loop
over long contiguous rows, with the weights transposed to (F, D) so that every inner loop runs
along D, and four rows per pass so that each load feeds four multiply-adds (with no
stand-in rows for the leftovers: choosing between a row and a stand-in inside the blocked
loop made LLVM's code for it 2-4x slower):
- forward: y[n, f] = b[f] + dot(x[n], w_t[f]), four samples' dot products at once;
- backward: dw_t[f] += sum of dy[n, f] * x[n] over four samples, and
  dx[n] = sum over f of dy[n, f] * w_t[f], four outputs at a time.
One thread: the loops take tens of microseconds, about what waking a thread costs, and a
parallel version made seed_cnn 16% faster but mlp at batch 64 32% slower (its second thread
met OpenBLAS's, still spinning after the product before).
"""
import numpy as np
from numba import njit

from .. import _common
from ..vectorized import linear as vectorized_linear
from ._config import CACHE, FASTMATH

NARROW = 16  # largest F served here


@njit(cache=CACHE, fastmath=FASTMATH)
def _forward(x, w_t, b, y):
    """y[n, f] = b[f] + sum over d of x[n, d] * w_t[f, d]; x (N, D), w_t (F, D), b (F,), y (N, F).
    Four samples at a time share each load of w_t; the last N % 4 samples go one by one."""
    N, D = x.shape
    F = w_t.shape[0]
    zero = x.dtype.type(0)
    whole = N - N % 4
    for n in range(0, whole, 4):
        x0, x1, x2, x3 = x[n], x[n + 1], x[n + 2], x[n + 3]
        for f in range(F):
            w = w_t[f]
            s0 = s1 = s2 = s3 = zero
            for d in range(D):
                s0 += x0[d] * w[d]
                s1 += x1[d] * w[d]
                s2 += x2[d] * w[d]
                s3 += x3[d] * w[d]
            y[n, f], y[n + 1, f], y[n + 2, f], y[n + 3, f] = s0 + b[f], s1 + b[f], s2 + b[f], s3 + b[f]
    for n in range(whole, N):
        for f in range(F):
            total = zero
            for d in range(D):
                total += x[n, d] * w_t[f, d]
            y[n, f] = total + b[f]


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _add_four(o, a0, r0, a1, r1, a2, r2, a3, r3):
    """o += a0 * r0 + a1 * r1 + a2 * r2 + a3 * r3 (rows of o's length, a's scalars)."""
    for d in range(o.shape[0]):
        o[d] += a0 * r0[d] + a1 * r1[d] + a2 * r2[d] + a3 * r3[d]


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _add_one(o, a, r):
    """o += a * r."""
    for d in range(o.shape[0]):
        o[d] += a * r[d]


@njit(cache=CACHE, fastmath=FASTMATH)
def _backward(dy, x, w_t, input_grad, dx, dw_t, db):
    """dw_t (F, D) = dy.T @ x, db (F,) = dy summed over n, and if ``input_grad`` dx (N, D) = dy @ w_t.
    Each output row gets four rows of input per pass (four samples for dw_t, four outputs for
    dx); the rows left over by fours go one by one."""
    N, D = x.shape
    F = w_t.shape[0]
    dw_t[:] = 0
    db[:] = 0
    whole = N - N % 4
    for n in range(0, whole, 4):  # four samples' rows of x stay in cache for every f
        for f in range(F):
            _add_four(dw_t[f], dy[n, f], x[n], dy[n + 1, f], x[n + 1], dy[n + 2, f], x[n + 2], dy[n + 3, f],
                      x[n + 3])
    for n in range(whole, N):
        for f in range(F):
            _add_one(dw_t[f], dy[n, f], x[n])
    for n in range(N):
        for f in range(F):
            db[f] += dy[n, f]
    if not input_grad:
        return
    whole = F - F % 4
    for n in range(N):
        o = dx[n]
        o[:] = 0
        g = dy[n]
        for f in range(0, whole, 4):
            _add_four(o, g[f], w_t[f], g[f + 1], w_t[f + 1], g[f + 2], w_t[f + 2], g[f + 3], w_t[f + 3])
        for f in range(whole, F):
            _add_one(o, g[f], w_t[f])


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
