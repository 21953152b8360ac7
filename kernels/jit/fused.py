"""Conv2d, optional ReLU and max-pooling in one Numba pass per image.

Each image's convolution output goes to a scratch plane owned by its thread, is pooled from
there straight into y, and is never stored for the whole batch: the (N, F, OH, OW) activation
and its ReLU and pooling passes over memory disappear. Pooling comes before the ReLU (the two
commute, see ``vectorized/fused.py``). For every window the forward pass records the flat index
(within its OH x OW plane) of its first maximum, or -1 where the ReLU sends it no gradient
(maximum <= 0, or NaN).

The backward pass rebuilds, per image, the convolution's output gradient dz from dy and those
indices, then runs the jit convolution's own per-image backward steps on it (weight gradient,
transposed correlation, unshift): see ``conv2d.py``. Stride-1 convolutions only, as there;
other strides go to the ``vectorized`` composition. Where ``conv2d`` uses Winograd's method,
so does this op: ``winograd.py`` pools each image's output with the same rules, from a scratch
image whose channels come last (it holds one slice of the batch's products, not the whole
activation, and keeps ``where`` for the whole batch even for inference). Convolutions of one
input channel go by phase planes (``phases.py``), where the pooling is one vectorised loop.
"""
import numpy as np
from numba import njit, prange

from .. import _common
from ..vectorized import fused as vectorized_fused
from . import phases, winograd
from ._config import CACHE, FASTMATH, batch_chunks, prange_only
from .conv2d import (_add_weight_grad, _correlate, _correlate_transpose, _shift_copies, _sum_partials,
                     _unshift_add)
from .maxpool2d import _pool_plane, _relu_window


@njit(cache=CACHE)
def _pool(z, size, stride, relu, y, where):
    """y[f, i, j] = max of z[f]'s window (i, j), ReLU'd if ``relu``; where[f, i, j] its flat index
    in z[f] (first maximum, NaN wins), or -1 if ``relu`` and the maximum is not > 0.

    z (F, OH, OW); y, where (F, PH, PW). The pooling is ``maxpool2d.py``'s, plane by plane.
    """
    F, PH, PW = y.shape
    zero = z.dtype.type(0)
    for f in range(F):
        _pool_plane(z[f], size, stride, y[f], where[f])
        if relu:
            for i in range(PH):
                y_row, where_row = y[f, i], where[f, i]
                for j in range(PW):
                    y_row[j], where_row[j] = _relu_window(y_row[j], where_row[j], zero)


@njit(parallel=prange_only(), cache=CACHE)
def _forward(x, w, b, pad, size, stride, relu, PH, PW, keep, chunks):
    """y (N, F, PH, PW), and what backward needs: where (N, F, PH, PW) int32 and every image's
    shifted copies. Without ``keep`` those two are only per-thread scratch space (one image's
    worth each), so inference allocates nothing but y."""
    N, C, H, W = x.shape
    F, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = H + 2 * pad - KH + 1, W + 2 * pad - KW + 1
    y = np.empty((N, F, PH, PW), x.dtype)
    where = np.empty((N if keep else chunks, F, PH, PW), np.int32)
    shifted = np.empty((N if keep else chunks, C, KW, H + 2 * pad, OW), x.dtype)
    for k in prange(chunks):
        z = np.empty((F, OH, OW), x.dtype)
        thread = np.int64(k)  # prange's index is unsigned: make it an image index's type
        for n in range(k * N // chunks, (k + 1) * N // chunks):
            m = n if keep else thread  # this image's slot, or the thread's scratch slot
            _shift_copies(x[n], pad, pad, shifted[m])
            _correlate(shifted[m], w, b, z)
            _pool(z, size, stride, relu, y[n], where[m])
    return y, where, shifted


@njit(parallel=prange_only(), cache=CACHE, fastmath=FASTMATH)
def _backward(dy, where, shifted, w, pad, H, W, OH, OW, input_grad, chunks):
    """dx (N, C, H, W) (or, without ``input_grad``, an empty array), dw (F, C, KH, KW), db (F,)
    from dy (N, F, PH, PW)."""
    N, F = dy.shape[0], dy.shape[1]
    P = dy.shape[2] * dy.shape[3]
    C, KH, KW = w.shape[1], w.shape[2], w.shape[3]
    dtype = w.dtype
    n = OH * OW
    dx = np.empty((N if input_grad else 0, C, H, W), dtype)
    dw_parts = np.zeros((chunks, F, C, KH, KW), dtype)
    db_parts = np.zeros((chunks, F), dtype)
    for k in prange(chunks):
        dz = np.empty((F, OH, OW), dtype)
        dz_flat = dz.reshape(F, n)
        d_shifted = np.empty((C, KW, OH + KH - 1, OW), dtype)
        dy_padded = np.zeros((F, n + 2 * (KH - 1) * OW), dtype)
        for i in range(k * N // chunks, (k + 1) * N // chunks):
            g = dy[i].reshape(F, P)
            at = where[i].reshape(F, P)
            dz[:] = 0
            for f in range(F):
                for p in range(P):
                    if at[f, p] >= 0:
                        dz_flat[f, at[f, p]] += g[f, p]
                middle = dy_padded[f, (KH - 1) * OW:]
                s = dtype.type(0)
                for q in range(n):
                    v = dz_flat[f, q]
                    middle[q] = v
                    s += v
                db_parts[k, f] += s
            _add_weight_grad(dz, shifted[i], dw_parts[k])
            if input_grad:
                _correlate_transpose(dy_padded, w, d_shifted)
                _unshift_add(d_shifted, pad, pad, dx[i])
    dw, db = _sum_partials(dw_parts, db_parts)
    return dx, dw, db


def conv2d_maxpool2d_forward(x, w, b, stride=1, pad=0, size=2, pool_stride=None, relu=False,
                             need_backward=True):
    """maxpool2d(relu(conv2d(x)) if relu else conv2d(x), size, pool_stride).

    x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, PH, PW), cache.
    ``need_backward=False`` (inference): nothing is kept for backward, which then raises.
    """
    OH, OW = _common.check_conv2d(x, w, b, stride, pad)
    if stride != 1:  # the direct convolution needs stride 1
        y, cache = vectorized_fused.conv2d_maxpool2d_forward(x, w, b, stride, pad, size, pool_stride, relu,
                                                             need_backward)
        return y, (vectorized_fused, cache)
    pool_stride, PH, PW = _common.check_pool_window((x.shape[0], w.shape[0], OH, OW), size, pool_stride)
    x, w, b = np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(b)
    keep = bool(need_backward)
    if winograd.suits(x, w, stride, pad):
        y, state = winograd.conv2d_maxpool2d_forward(x, w, b, pad, size, pool_stride, relu, PH, PW, keep)
        return y, (winograd, state)
    if phases.suits(x, size):
        y, state = phases.conv2d_maxpool2d_forward(x, w, b, pad, size, pool_stride, relu, PH, PW, keep)
        return y, (phases, state)
    chunks = batch_chunks(x.shape[0])
    y, where, shifted = _forward(x, w, b, int(pad), int(size), int(pool_stride), bool(relu), PH, PW, keep, chunks)
    return y, (None, (x.shape, where, shifted, w, int(pad), OH, OW, chunks) if keep else None)


def conv2d_maxpool2d_backward(dy, cache, input_grad=True):
    """dy (N, F, PH, PW) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,).

    ``input_grad=False``: dx is not computed (a third of the work when C = 1) and is None.
    """
    delegate, state = cache
    if delegate is not None:
        return delegate.conv2d_maxpool2d_backward(dy, state, input_grad)
    if state is None:
        raise ValueError("conv2d_maxpool2d_backward: the forward pass ran with need_backward=False")
    (N, C, H, W), where, shifted, w, pad, OH, OW, chunks = state  # the batch cut as the forward cut it
    if dy.shape != where.shape:
        raise ValueError(f"dy must have shape {where.shape}, got {dy.shape}")
    dy = np.ascontiguousarray(dy, dtype=w.dtype)
    dx, dw, db = _backward(dy, where, shifted, w, pad, H, W, OH, OW, bool(input_grad), chunks)
    return (dx if input_grad else None), dw, db
