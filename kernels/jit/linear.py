"""Linear layers with a narrow output in Numba (F <= 16: a classifier's last layer); wider
ones go to the ``vectorized`` backend's BLAS products.

Why, when OpenBLAS is about as fast on these products in isolation (seed_cnn's (64, 1352) @
(1352, 10) and its two gradient products: 96 us in OpenBLAS, 128 us here): each BLAS call wakes
OpenBLAS's second thread, which then spins while the Numba convolution that follows wants its
core. With its head here, seed_cnn's training step makes no BLAS call at all (its epoch was 35%
slower with the head in BLAS), and an MLP's step is as fast either way. Each product is a loop
over long contiguous rows, with the weights transposed to (F, D) so that every inner loop runs
along D, blocked with the direct convolution's micro-kernels (``conv2d.py``) so that each
load feeds three or four multiply-adds:
- forward: y[n, f] = b[f] + dot(x[n], w_t[f]), four samples by three filters at once
  (``_add_dots4x3``);
- backward: dw_t[f] += sum of dy[n, f] * x[n], four filters' rows from three samples at once,
  and dx[n] = sum over f of dy[n, f] * w_t[f], four samples' rows from three filters at once
  (both ``_add_product``, over ``_madd4x3``).
Against four samples (or outputs) by one row at a time, seed_cnn's head (64, 1352) -> 10 went
from 41 to 31 us forward and from 102 to 77 us backward with dx, and its epochs 4-5% faster;
mlp's (64, 512) -> 10 is unchanged.
Threads: the loops take tens of microseconds, about what waking a thread costs, so heads
over fewer than ``PARALLEL_D`` inputs run on one thread, and wider ones split the batch over
the threads (dw_t and db summed from per-thread partials). The line between them is measured,
not derived: in two threads seed_cnn's head (1352 inputs, after a Numba convolution) made its
epochs 10-15% faster, while mlp's head (512 inputs, after an OpenBLAS product) made mlp's 15%
(batch 256) to 31% (batch 64) slower: its second thread meets OpenBLAS's, still spinning.

``linear_relu`` (a hidden layer: Linear then ReLU, fused by ``Sequential``) takes the BLAS
product at every width, then adds the bias and applies the ReLU in one pass over y, in place,
noting where the ReLU is live (a boolean mask: the cache never holds the output, which the
caller may change); backward, one pass over dy gives both the ReLU's gradient and db before
the two BLAS products.
Against Linear and ReLU one after the other, that is two passes over the (N, F) activation
fewer each way -- passes that cost three times what they cost alone when they follow a BLAS
product (mlp at batch 256: bias 70 us and ReLU 58 us in the epoch, 23 and 16 us in a loop).
"""
import numpy as np
from numba import njit, prange

from .. import _common
from ..vectorized import linear as vectorized_linear
from ._config import CACHE, FASTMATH, batch_chunks, prange_only
from .conv2d import _add_dots4x3, _madd4x3, _sum_partials

NARROW = 16  # largest F served here
PARALLEL_D = 1024  # fewest inputs D for which the batch is split over the threads


@njit(cache=CACHE, fastmath=FASTMATH)
def _forward(x, w_t, b, y):
    """y[n, f] = b[f] + sum over d of x[n, d] * w_t[f, d]; x (N, D), w_t (F, D), b (F,), y (N, F).
    Four samples by three filters at a time (``conv2d._add_dots4x3``: twelve sums from seven
    loads); a missing sample or filter repeats the last real one and its sums are dropped."""
    N = x.shape[0]
    F = w_t.shape[0]
    sums = np.empty((4, 3), x.dtype)
    for n in range(0, N, 4):
        n1, n2, n3 = min(n + 1, N - 1), min(n + 2, N - 1), min(n + 3, N - 1)
        for f in range(0, F, 3):
            f1, f2 = min(f + 1, F - 1), min(f + 2, F - 1)
            sums[:] = 0
            _add_dots4x3(x[n], x[n1], x[n2], x[n3], w_t[f], w_t[f1], w_t[f2], sums)
            for a in range(min(4, N - n)):
                for t in range(min(3, F - f)):
                    y[n + a, f + t] = b[f + t] + sums[a, t]


@njit(cache=CACHE, fastmath=FASTMATH)
def _add_product(coef, rows, out):
    """out[r] += sum over k of coef[r, k] * rows[k]: coef (R, K), rows (K, D), out (R, D). Four
    rows of out from three of rows at a time (``conv2d._madd4x3``, its twelve factors from coef);
    missing outputs write to spare rows, missing inputs read zeros with factor 0."""
    R, K = coef.shape
    D = out.shape[1]
    zero = out.dtype.type(0)
    no_input = np.zeros(D, out.dtype)
    spare = np.empty((3, D), out.dtype)
    ws = np.empty((4, 3), out.dtype)
    for r in range(0, R, 4):
        o0 = out[r]
        o1 = out[r + 1] if r + 1 < R else spare[0]
        o2 = out[r + 2] if r + 2 < R else spare[1]
        o3 = out[r + 3] if r + 3 < R else spare[2]
        for k in range(0, K, 3):
            i1 = rows[k + 1] if k + 1 < K else no_input
            i2 = rows[k + 2] if k + 2 < K else no_input
            for a in range(4):
                for t in range(3):
                    ws[a, t] = coef[r + a, k + t] if r + a < R and k + t < K else zero
            _madd4x3(o0, o1, o2, o3, rows[k], i1, i2, ws)


@njit(cache=CACHE, fastmath=FASTMATH)
def _backward(dy, x, w_t, input_grad, dx, dw_t, db):
    """dw_t (F, D) = dy.T @ x, db (F,) = dy summed over n, and if ``input_grad`` dx (N, D) = dy @ w_t,
    both by ``_add_product``."""
    N, F = dy.shape
    db[:] = 0
    for n in range(N):
        for f in range(F):
            db[f] += dy[n, f]
    dw_t[:] = 0
    _add_product(dy.T, x, dw_t)
    if input_grad:
        dx[:] = 0
        _add_product(dy, w_t, dx)


@njit(parallel=prange_only(), cache=CACHE)
def _forward_in_chunks(x, w_t, b, y, chunks):
    """``_forward`` with the batch cut into ``chunks`` slices, one per thread."""
    N = x.shape[0]
    for k in prange(chunks):
        lo, hi = k * N // chunks, (k + 1) * N // chunks
        _forward(x[lo:hi], w_t, b, y[lo:hi])


@njit(parallel=prange_only(), cache=CACHE)
def _backward_in_chunks(dy, x, w_t, input_grad, dx, dw_t, db, chunks):
    """``_backward`` with the batch cut into ``chunks`` slices, one per thread, each writing its
    rows of dx and its own partial dw_t and db; the partials are then added in chunk order
    (``conv2d._sum_partials``)."""
    N, F = dy.shape
    dw_parts = np.empty((chunks, F, x.shape[1]), x.dtype)
    db_parts = np.empty((chunks, F), x.dtype)
    for k in prange(chunks):
        lo, hi = k * N // chunks, (k + 1) * N // chunks
        _backward(dy[lo:hi], x[lo:hi], w_t, input_grad, dx[lo:hi], dw_parts[k], db_parts[k])
    summed_dw, summed_db = _sum_partials(dw_parts, db_parts)
    dw_t[:] = summed_dw
    db[:] = summed_db


@njit(cache=CACHE)
def _add_bias_relu(y, b, live):
    """y[n, f] = max(y[n, f] + b[f], 0) in place, NaN kept (as in ``relu.py``), and live[n, f]
    whether y[n, f] + b[f] > 0 (where the ReLU passes gradient). y (N, F), b (F,), live (N, F) bool."""
    zero = y.dtype.type(0)
    for n in range(y.shape[0]):
        row, live_row = y[n], live[n]
        for f in range(row.size):
            v = row[f] + b[f]
            live_row[f] = v > zero
            row[f] = zero if v <= zero else v


@njit(cache=CACHE)
def _relu_backward_and_bias_grad(dy, live, dz, db):
    """dz[n, f] = dy[n, f] where live[n, f], else 0; db[f] = sum over n of dz[n, f], added in
    order of n. dy, live, dz (N, F); db (F,)."""
    zero = dz.dtype.type(0)
    db[:] = zero
    for n in range(dz.shape[0]):
        for f in range(dz.shape[1]):
            g = dy[n, f] if live[n, f] else zero
            dz[n, f] = g
            db[f] += g


def linear_forward(x, w, b):
    """x (N, D), w (D, F), b (F,) -> y (N, F), cache."""
    _common.check_linear(x, w, b)
    if w.shape[1] > NARROW:
        y, cache = vectorized_linear.linear_forward(x, w, b)
        return y, (vectorized_linear, cache)
    x, w_t, b = np.ascontiguousarray(x), np.ascontiguousarray(w.T), np.ascontiguousarray(b)
    y = np.empty((x.shape[0], w.shape[1]), x.dtype)
    chunks = batch_chunks(x.shape[0]) if x.shape[1] >= PARALLEL_D else 1
    if chunks > 1:
        _forward_in_chunks(x, w_t, b, y, chunks)
    else:
        _forward(x, w_t, b, y)
    return y, (None, (x, w_t, chunks))


def linear_backward(dy, cache, input_grad=True):
    """dy (N, F) -> dx (N, D) (None if not ``input_grad``), dw (D, F), db (F,)."""
    served_by, cache = cache
    if served_by is not None:
        return served_by.linear_backward(dy, cache, input_grad)
    x, w_t, chunks = cache  # the batch is cut as the forward pass cut it
    if dy.shape != (x.shape[0], w_t.shape[0]):
        raise ValueError(f"dy must have shape {(x.shape[0], w_t.shape[0])}, got {dy.shape}")
    dx = np.empty(x.shape, x.dtype) if input_grad else np.empty((0, 0), x.dtype)
    dw_t, db = np.empty_like(w_t), np.empty(w_t.shape[0], x.dtype)
    dy = np.ascontiguousarray(dy, x.dtype)
    if chunks > 1:
        _backward_in_chunks(dy, x, w_t, input_grad, dx, dw_t, db, chunks)
    else:
        _backward(dy, x, w_t, input_grad, dx, dw_t, db)
    return (dx if input_grad else None), np.ascontiguousarray(dw_t.T), db


def linear_relu_forward(x, w, b):
    """relu(x @ w + b): x (N, D), w (D, F), b (F,) -> y (N, F), cache."""
    _common.check_linear(x, w, b)
    y = x @ w
    live = np.empty(y.shape, np.bool_)
    _add_bias_relu(y, np.ascontiguousarray(b), live)
    return y, (x, w, live)


def linear_relu_backward(dy, cache, input_grad=True):
    """dy (N, F) -> dx (N, D) (None if not ``input_grad``), dw (D, F), db (F,)."""
    x, w, live = cache
    if dy.shape != live.shape:
        raise ValueError(f"dy must have shape {live.shape}, got {dy.shape}")
    dz, db = np.empty(live.shape, x.dtype), np.empty(live.shape[1], x.dtype)
    _relu_backward_and_bias_grad(np.ascontiguousarray(dy, x.dtype), live, dz, db)
    return (dz @ w.T if input_grad else None), x.T @ dz, db
