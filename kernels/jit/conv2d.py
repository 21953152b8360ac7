"""Conv2d in Numba: a direct convolution over flattened, padded image planes.

Layout trick. A padded plane of Hp x Wp values is stored flat, row after row. For stride 1, output
(i, j) of tap (kh, kw) reads ``plane[(i + kh) * Wp + (j + kw)]``, so over the flat index
``p = i * Wp + j`` every tap is one contiguous run: ``acc[p] += w * plane[kh * Wp + kw + p]``.
One long loop over ``p`` (which LLVM vectorises) computes a whole output plane, plus ``Wp - OW``
unused columns per row that are dropped when copying out. Taps are applied nine at a time
(3 x 3 blocks, remainder taps one by one), so each pass over ``acc`` does nine multiply-adds.

Stride > 1 evaluates the stride-1 result and keeps every ``stride``-th position; the backward
pass spreads ``dy`` onto the stride-1 grid with zeros in between. That costs ``stride**2`` more
work but keeps one code path; no model here uses a stride above 1.

Backward, per image:
- dx is the same correlation applied to ``dy`` padded by (KH-1, KW-1) with the kernel flipped
  and its F and C axes swapped ("full" convolution), cropped by ``pad``.
- dw[f, c, kh, kw] is a dot product of ``dy[f]`` (laid out with row width Wp, zeros in the
  unused columns) with the run of ``plane[c]`` starting at ``kh * Wp + kw``.
Images are split into one chunk per thread; each chunk sums its dw and db into its own partial
buffer and the partials are added serially at the end.

The loops use the ``reassoc`` and ``contract`` fast-math flags only (reordered sums and fused
multiply-add, needed to vectorise the dot products); NaN and infinity still propagate.
"""
import numba
import numpy as np
from numba import njit, prange

from .. import _common

FASTMATH = {"reassoc", "contract"}


@njit(cache=True, fastmath=FASTMATH)
def _correlate_image(src, w, b, width, start, stride, out):
    """One image: out[f, i, j] = b[f] + sum over c, kh, kw of
    w[f, c, kh, kw] * src[c, start + (i * stride + kh) * width + j * stride + kw].

    src (C, S) flat planes of row width ``width``; w (F, C, KH, KW); b (F,); out (F, OH, OW).
    """
    F, C, KH, KW = w.shape
    OH, OW = out.shape[1], out.shape[2]
    n = (OH - 1) * stride * width + (OW - 1) * stride + 1
    acc = np.empty(n, src.dtype)
    KH3, KW3 = KH - KH % 3, KW - KW % 3
    for f in range(F):
        acc[:] = b[f]
        for c in range(C):
            plane = src[c, start:]
            for kh in range(0, KH3, 3):
                for kw in range(0, KW3, 3):
                    r0 = plane[kh * width + kw:]
                    r1 = plane[(kh + 1) * width + kw:]
                    r2 = plane[(kh + 2) * width + kw:]
                    w00, w01, w02 = w[f, c, kh, kw], w[f, c, kh, kw + 1], w[f, c, kh, kw + 2]
                    w10, w11, w12 = w[f, c, kh + 1, kw], w[f, c, kh + 1, kw + 1], w[f, c, kh + 1, kw + 2]
                    w20, w21, w22 = w[f, c, kh + 2, kw], w[f, c, kh + 2, kw + 1], w[f, c, kh + 2, kw + 2]
                    for p in range(n):
                        acc[p] += (w00 * r0[p] + w01 * r0[p + 1] + w02 * r0[p + 2]
                                   + w10 * r1[p] + w11 * r1[p + 1] + w12 * r1[p + 2]
                                   + w20 * r2[p] + w21 * r2[p + 1] + w22 * r2[p + 2])
            for kh in range(KH):
                for kw in range(KW):
                    if kh >= KH3 or kw >= KW3:
                        r = plane[kh * width + kw:]
                        wv = w[f, c, kh, kw]
                        for p in range(n):
                            acc[p] += wv * r[p]
        for i in range(OH):
            row = i * stride * width
            for j in range(OW):
                out[f, i, j] = acc[row + j * stride]


@njit(cache=True, fastmath=FASTMATH)
def _add_weight_grad_image(g, src, width, dw):
    """One image: dw[f, c, kh, kw] += sum over p of g[f, p] * src[c, kh * width + kw + p].

    g (F, L) output gradients with row width ``width`` (zeros in unused columns);
    src (C, S) flat padded planes of row width ``width``; dw (F, C, KH, KW).
    """
    F, C, KH, KW = dw.shape
    n = g.shape[1]
    zero = g.dtype.type(0)  # accumulate in the array's own precision
    KH3, KW3 = KH - KH % 3, KW - KW % 3
    for f in range(F):
        d = g[f]
        for c in range(C):
            plane = src[c]
            for kh in range(0, KH3, 3):
                for kw in range(0, KW3, 3):
                    r0 = plane[kh * width + kw:]
                    r1 = plane[(kh + 1) * width + kw:]
                    r2 = plane[(kh + 2) * width + kw:]
                    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
                    for p in range(n):
                        v = d[p]
                        s00 += v * r0[p]
                        s01 += v * r0[p + 1]
                        s02 += v * r0[p + 2]
                        s10 += v * r1[p]
                        s11 += v * r1[p + 1]
                        s12 += v * r1[p + 2]
                        s20 += v * r2[p]
                        s21 += v * r2[p + 1]
                        s22 += v * r2[p + 2]
                    dw[f, c, kh, kw] += s00
                    dw[f, c, kh, kw + 1] += s01
                    dw[f, c, kh, kw + 2] += s02
                    dw[f, c, kh + 1, kw] += s10
                    dw[f, c, kh + 1, kw + 1] += s11
                    dw[f, c, kh + 1, kw + 2] += s12
                    dw[f, c, kh + 2, kw] += s20
                    dw[f, c, kh + 2, kw + 1] += s21
                    dw[f, c, kh + 2, kw + 2] += s22
            for kh in range(KH):
                for kw in range(KW):
                    if kh >= KH3 or kw >= KW3:
                        r = plane[kh * width + kw:]
                        s = zero
                        for p in range(n):
                            s += d[p] * r[p]
                        dw[f, c, kh, kw] += s


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _forward(x, w, b, stride, pad, OH, OW):
    """y (N, F, OH, OW) and the padded flat images xp (N, C, Hp * Wp) kept for the backward pass."""
    N, C, H, W = x.shape
    F = w.shape[0]
    Hp, Wp = H + 2 * pad, W + 2 * pad
    xp = np.zeros((N, C, Hp * Wp), x.dtype)
    y = np.empty((N, F, OH, OW), x.dtype)
    for n in prange(N):
        for c in range(C):
            for h in range(H):
                row = (h + pad) * Wp + pad
                for j in range(W):
                    xp[n, c, row + j] = x[n, c, h, j]
        # np.int64(0), not 0: a literal would compile a second specialisation of the helper.
        _correlate_image(xp[n], w, b, Wp, np.int64(0), stride, y[n])
    return y, xp


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _backward(dy1, xp, w, Hp, Wp, pad, H, W, chunks):
    """dx, dw, db from dy1 (N, F, Hp-KH+1, Wp-KW+1), the output gradient on the stride-1 grid."""
    N, F, OH1, OW1 = dy1.shape
    C = xp.shape[1]
    KH, KW = w.shape[2], w.shape[3]
    dtype = xp.dtype
    # dx is a correlation of dy1, padded by (KH-1, KW-1), with the flipped, F<->C swapped kernel.
    w_full = np.empty((C, F, KH, KW), dtype)
    for f in range(F):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    w_full[c, f, kh, kw] = w[f, c, KH - 1 - kh, KW - 1 - kw]
    no_bias = np.zeros(C, dtype)
    Hd, Wd = OH1 + 2 * (KH - 1), OW1 + 2 * (KW - 1)
    n_out = (OH1 - 1) * Wp + OW1
    dx = np.empty((N, C, H, W), dtype)
    dw_parts = np.zeros((chunks, F, C, KH, KW), dtype)
    db_parts = np.zeros((chunks, F), dtype)
    for k in prange(chunks):
        dy_padded = np.zeros((F, Hd * Wd), dtype)
        dy_wide = np.zeros((F, n_out), dtype)
        for n in range(k * N // chunks, (k + 1) * N // chunks):
            for f in range(F):
                s = 0.0
                for i in range(OH1):
                    padded_row = (i + KH - 1) * Wd + KW - 1
                    wide_row = i * Wp
                    for j in range(OW1):
                        v = dy1[n, f, i, j]
                        dy_padded[f, padded_row + j] = v
                        dy_wide[f, wide_row + j] = v
                        s += v
                db_parts[k, f] += s
            _correlate_image(dy_padded, w_full, no_bias, Wd, pad * Wd + pad, np.int64(1), dx[n])
            _add_weight_grad_image(dy_wide, xp[n], Wp, dw_parts[k])
    dw = dw_parts[0].copy()
    db = db_parts[0].copy()
    for k in range(1, chunks):
        dw += dw_parts[k]
        db += db_parts[k]
    return dx, dw, db


def conv2d_forward(x, w, b, stride=1, pad=0):
    """y[n, f] = b[f] + sum over c of x[n, c] (zero-padded by ``pad``) cross-correlated with w[f, c].

    x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW), cache.
    """
    OH, OW = _common.check_conv2d(x, w, b, stride, pad)
    stride, pad = int(stride), int(pad)
    x, w, b = np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(b)
    y, xp = _forward(x, w, b, stride, pad, OH, OW)
    return y, (xp, w, x.shape, stride, pad)


def conv2d_backward(dy, cache):
    """dy (N, F, OH, OW) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,)."""
    xp, w, (N, C, H, W), stride, pad = cache
    F, _, KH, KW = w.shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    OH, OW = _common.output_size(H, KH, stride, pad), _common.output_size(W, KW, stride, pad)
    if dy.shape != (N, F, OH, OW):
        raise ValueError(f"dy must have shape {(N, F, OH, OW)}, got {dy.shape}")
    dy = np.ascontiguousarray(dy, dtype=xp.dtype)
    if stride > 1:
        dy1 = np.zeros((N, F, Hp - KH + 1, Wp - KW + 1), xp.dtype)
        dy1[:, :, ::stride, ::stride] = dy
        dy = dy1
    chunks = min(N, numba.get_num_threads())
    return _backward(dy, xp, w, Hp, Wp, pad, H, W, chunks)
