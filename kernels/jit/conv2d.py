"""Conv2d in Numba: a direct convolution built from long, contiguous, vectorised loops.

When it pays. The direct method wins on thin layers, where im2col + BLAS spends its time
copying columns for a small product: seed_cnn's first convolution (C = 1) runs about 1.5x
as fast as the ``vectorized`` backend, and with its max-pooling fused 3.5x. 3 x 3 kernels with
many input channels on small planes go to Winograd's method instead (``winograd.py``, which
says where: lenet's second convolution, 32 -> 64 channels on 14 x 14, with its pooling 11.6 ->
7.2 ms forward and backward at batch 64). It needs stride 1; any other stride is handed to
``vectorized``'s im2col + BLAS (by the direct method on the stride-1 grid, stride 2 was 5x
slower), and the cache remembers which one ran. Where BLAS would still win at stride 1:
kernels narrower than 3 (the micro-kernel takes three kernel columns at a time; 1 x 1 with
16 -> 32 channels was 4x slower) and small planes with many channels and kernels other than
3 x 3. No model here has those.

Shifted copies. For each image the padded input is first copied into ``KW`` shifted copies
whose rows are exactly as wide as the output (an im2col along the kernel's width only):

    shifted[c, kw, r, j] = x_padded[c, r, j + kw]

so output (i, j) of tap (kh, kw) reads ``shifted[c, kw, i + kh, j]``: over the flat output
index ``q = i * OW + j`` every tap is one contiguous run of ``shifted[c, kw]`` starting at row
``kh``, and one loop over ``q`` updates a whole output plane in place.

Micro-kernel. The loops do four outputs from three inputs at a time (``_madd4x3``: 12
multiply-adds for 3 loads and 4 load-stores per element): forward, four filters from the
three taps of one kernel row. Missing outputs (F not a multiple of 4) write to a scratch
buffer; missing inputs read zeros with weight 0, so NaN and infinity never leak across. (The
backward's transposed correlation does read rows of zeros around dy: an infinite weight gives
NaN (0 * inf) at the border of dx where the reference's sums are finite.)
Four outputs rather than three made each of the three loops below 16-25% faster on lenet's
second layer (three was 4 fewer registers than the machine has to spare; five or six gained
nothing more).

The forward pass keeps the shifted copies of every image for the backward pass, which works
per image:
- ``dw[f, c, kh, kw]`` is the dot product of ``dy[f]`` (flat) with ``shifted[c, kw]`` from row
  ``kh`` on; four filters by three kw at a time.
- dx takes the adjoint of each forward step in reverse order: first
  ``d_shifted[c, kw, r, j] = sum over f, kh of w[f, c, kh, kw] * dy[f, r - kh, j]`` (the
  transpose of the forward loop; six outputs, two channels by three kw, from three kh inputs
  at a time: 15% faster than four), then
  ``dx[c, h, w] = sum over kw of d_shifted[c, kw, h + pad, w + pad - kw]`` (the transpose of
  the shifted copies).
Images are split into one chunk per thread; each chunk has its own scratch buffers and sums
dw and db into its own partial buffer; the partials are added serially at the end.

The loops use the ``reassoc`` and ``contract`` fast-math flags only (``_config.FASTMATH``).
"""
import numpy as np
from numba import njit, prange

from .. import _common
from ..vectorized import conv2d as vectorized_conv2d
from . import winograd
from ._config import CACHE, FASTMATH, batch_chunks, prange_only


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _madd4x3(o0, o1, o2, o3, i0, i1, i2, ws):
    """o_a[q] += ws[a, 0] * i0[q] + ws[a, 1] * i1[q] + ws[a, 2] * i2[q] for a = 0..3 and every q
    of o0. ws (4, 3): its twelve weights stay in registers for the whole loop."""
    w00, w01, w02 = ws[0, 0], ws[0, 1], ws[0, 2]
    w10, w11, w12 = ws[1, 0], ws[1, 1], ws[1, 2]
    w20, w21, w22 = ws[2, 0], ws[2, 1], ws[2, 2]
    w30, w31, w32 = ws[3, 0], ws[3, 1], ws[3, 2]
    for q in range(o0.shape[0]):
        u, v, s = i0[q], i1[q], i2[q]
        o0[q] += w00 * u + w01 * v + w02 * s
        o1[q] += w10 * u + w11 * v + w12 * s
        o2[q] += w20 * u + w21 * v + w22 * s
        o3[q] += w30 * u + w31 * v + w32 * s


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _madd6x3(o0, o1, o2, o3, o4, o5, i0, i1, i2, ws):
    """``_madd4x3`` with six outputs: ws (6, 3)."""
    w00, w01, w02 = ws[0, 0], ws[0, 1], ws[0, 2]
    w10, w11, w12 = ws[1, 0], ws[1, 1], ws[1, 2]
    w20, w21, w22 = ws[2, 0], ws[2, 1], ws[2, 2]
    w30, w31, w32 = ws[3, 0], ws[3, 1], ws[3, 2]
    w40, w41, w42 = ws[4, 0], ws[4, 1], ws[4, 2]
    w50, w51, w52 = ws[5, 0], ws[5, 1], ws[5, 2]
    for q in range(o0.shape[0]):
        u, v, s = i0[q], i1[q], i2[q]
        o0[q] += w00 * u + w01 * v + w02 * s
        o1[q] += w10 * u + w11 * v + w12 * s
        o2[q] += w20 * u + w21 * v + w22 * s
        o3[q] += w30 * u + w31 * v + w32 * s
        o4[q] += w40 * u + w41 * v + w42 * s
        o5[q] += w50 * u + w51 * v + w52 * s


@njit(cache=CACHE)
def _shift_copies(src, top, left, shifted):
    """shifted[c, kw, r, j] = src[c, r - top, j + kw - left], zero outside src.

    src (C, H, W); shifted (C, KW, R, OW). Plain element loops: rows are short (14 to 28), and
    slicing them into runs cost 2.5x more than the copying (measured on lenet's second layer).
    """
    C, H, W = src.shape
    KW, R, OW = shifted.shape[1], shifted.shape[2], shifted.shape[3]
    zero = src.dtype.type(0)
    for c in range(C):
        for kw in range(KW):
            # Output columns j0 <= j < j1 read inside src: 0 <= j + kw - left < W.
            j0 = min(OW, max(0, left - kw))
            j1 = max(j0, min(OW, W + left - kw))
            for r in range(R):
                h = r - top
                if h < 0 or h >= H:
                    j0_row, j1_row = OW, OW  # the whole row is zero
                else:
                    j0_row, j1_row = j0, j1
                for j in range(j0_row):
                    shifted[c, kw, r, j] = zero
                for j in range(j0_row, j1_row):
                    shifted[c, kw, r, j] = src[c, h, j + kw - left]
                for j in range(j1_row, OW):
                    shifted[c, kw, r, j] = zero


@njit(cache=CACHE)
def _unshift_add(d_shifted, top, left, dsrc):
    """dsrc[c, h, w] = sum over kw of d_shifted[c, kw, h + top, w + left - kw] (entries inside
    d_shifted only): the transpose of ``_shift_copies``.

    d_shifted (C, KW, R, OW); dsrc (C, H, W).
    """
    C, H, W = dsrc.shape
    KW, R, OW = d_shifted.shape[1], d_shifted.shape[2], d_shifted.shape[3]
    zero = dsrc.dtype.type(0)
    for c in range(C):
        for h in range(H):
            for w in range(W):
                dsrc[c, h, w] = zero
            r = h + top
            if r < 0 or r >= R:
                continue
            for kw in range(KW):
                # Row entries j = w + left - kw with 0 <= j < OW and 0 <= w < W.
                w0 = min(W, max(0, kw - left))
                w1 = max(w0, min(W, OW + kw - left))
                for w in range(w0, w1):
                    dsrc[c, h, w] += d_shifted[c, kw, r, w + left - kw]


@njit(cache=CACHE, fastmath=FASTMATH)
def _correlate(shifted, w, b, out):
    """out[f, i, j] = b[f] + sum over c, kh, kw of w[f, c, kh, kw] * shifted[c, kw, i + kh, j].

    shifted (C, KW, OH + KH - 1, OW) from ``_shift_copies``; w (F, C, KH, KW); b (F,);
    out (F, OH, OW).
    """
    F, C, KH, KW = w.shape
    n = out.shape[1] * out.shape[2]
    OW = out.shape[2]
    flat = shifted.reshape(C, KW, shifted.shape[2] * OW)
    planes = out.reshape(F, n)
    zero = w.dtype.type(0)
    no_input = np.zeros(n, out.dtype)
    spare = np.zeros((3, n), out.dtype)
    ws = np.empty((4, 3), w.dtype)
    for f in range(0, F, 4):
        o0 = planes[f]
        o1 = planes[f + 1] if f + 1 < F else spare[0]
        o2 = planes[f + 2] if f + 2 < F else spare[1]
        o3 = planes[f + 3] if f + 3 < F else spare[2]
        for a in range(min(4, F - f)):
            planes[f + a, :] = b[f + a]
        for c in range(C):
            for kh in range(KH):
                for kw in range(0, KW, 3):
                    i0 = flat[c, kw, kh * OW:]
                    i1 = flat[c, kw + 1, kh * OW:] if kw + 1 < KW else no_input
                    i2 = flat[c, kw + 2, kh * OW:] if kw + 2 < KW else no_input
                    for a in range(4):
                        for t in range(3):
                            ws[a, t] = w[f + a, c, kh, kw + t] if f + a < F and kw + t < KW else zero
                    _madd4x3(o0, o1, o2, o3, i0, i1, i2, ws)


@njit(cache=CACHE, fastmath=FASTMATH)
def _correlate_transpose(dy_padded, w, d_shifted):
    """d_shifted[c, kw, r, j] = sum over f, kh of w[f, c, kh, kw] * dy[f, r - kh, j]: the transpose
    of ``_correlate``.

    dy_padded (F, (OH + 2 * (KH - 1)) * OW): each dy[f] flat, with KH - 1 rows of zeros before
    and after; w (F, C, KH, KW); d_shifted (C, KW, OH + KH - 1, OW).
    """
    F, C, KH, KW = w.shape
    OW = d_shifted.shape[3]
    n = d_shifted.shape[2] * OW
    flat = d_shifted.reshape(C, KW, n)
    zero = w.dtype.type(0)
    no_input = np.zeros(n, w.dtype)
    spare = np.zeros(n, w.dtype)
    ws = np.empty((6, 3), w.dtype)
    for c in range(0, C, 2):
        for kw in range(0, KW, 3):
            # Outputs (c, kw), (c, kw + 1), (c, kw + 2), then the same for channel c + 1.
            o0 = flat[c, kw]
            o1 = flat[c, kw + 1] if kw + 1 < KW else spare
            o2 = flat[c, kw + 2] if kw + 2 < KW else spare
            o3 = flat[c + 1, kw] if c + 1 < C else spare
            o4 = flat[c + 1, kw + 1] if c + 1 < C and kw + 1 < KW else spare
            o5 = flat[c + 1, kw + 2] if c + 1 < C and kw + 2 < KW else spare
            for a in range(min(2, C - c)):
                for t in range(min(3, KW - kw)):
                    flat[c + a, kw + t, :] = zero
            for f in range(F):
                for kh in range(0, KH, 3):
                    # dy[f, r - kh, j] is dy_padded[f, r * OW + j + (KH - 1 - kh) * OW].
                    i0 = dy_padded[f, (KH - 1 - kh) * OW:]
                    i1 = dy_padded[f, (KH - 2 - kh) * OW:] if kh + 1 < KH else no_input
                    i2 = dy_padded[f, (KH - 3 - kh) * OW:] if kh + 2 < KH else no_input
                    for a in range(2):
                        for t in range(3):
                            for u in range(3):
                                inside = c + a < C and kw + t < KW and kh + u < KH
                                ws[3 * a + t, u] = w[f, c + a, kh + u, kw + t] if inside else zero
                    _madd6x3(o0, o1, o2, o3, o4, o5, i0, i1, i2, ws)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _add_dots4x3(g0, g1, g2, g3, r0, r1, r2, sums):
    """sums[a, t] += dot(g_a, r_t) over the length of g0, for a = 0..3 and t = 0..2: twelve sums
    kept in registers through the loop (the r's may be longer views)."""
    zero = sums.dtype.type(0)  # accumulate in the array's own precision
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = zero
    for q in range(g0.shape[0]):
        a0, a1, a2, a3 = g0[q], g1[q], g2[q], g3[q]
        u, v, s = r0[q], r1[q], r2[q]
        s00 += a0 * u
        s01 += a0 * v
        s02 += a0 * s
        s10 += a1 * u
        s11 += a1 * v
        s12 += a1 * s
        s20 += a2 * u
        s21 += a2 * v
        s22 += a2 * s
        s30 += a3 * u
        s31 += a3 * v
        s32 += a3 * s
    totals = ((s00, s01, s02), (s10, s11, s12), (s20, s21, s22), (s30, s31, s32))
    for a in range(4):
        for t in range(3):
            sums[a, t] += totals[a][t]


@njit(cache=CACHE, fastmath=FASTMATH)
def _add_weight_grad(dy, shifted, dw):
    """dw[f, c, kh, kw] += sum over i, j of dy[f, i, j] * shifted[c, kw, i + kh, j].

    dy (F, OH, OW); shifted (C, KW, OH + KH - 1, OW) from ``_shift_copies``; dw (F, C, KH, KW).
    Four filters by three kw at a time (``_add_dots4x3``); a missing filter or kw repeats the
    last real one and its sums are dropped.
    """
    F, C, KH, KW = dw.shape
    OW = dy.shape[2]
    n = dy.shape[1] * OW
    g = dy.reshape(F, n)
    flat = shifted.reshape(C, KW, shifted.shape[2] * OW)
    sums = np.empty((4, 3), dy.dtype)
    for f in range(0, F, 4):
        g0, g1, g2, g3 = g[f], g[min(f + 1, F - 1)], g[min(f + 2, F - 1)], g[min(f + 3, F - 1)]
        for c in range(C):
            for kh in range(KH):
                for kw in range(0, KW, 3):
                    r0 = flat[c, kw, kh * OW:]
                    r1 = flat[c, min(kw + 1, KW - 1), kh * OW:]
                    r2 = flat[c, min(kw + 2, KW - 1), kh * OW:]
                    sums[:] = 0
                    _add_dots4x3(g0, g1, g2, g3, r0, r1, r2, sums)
                    for a in range(min(4, F - f)):
                        for t in range(min(3, KW - kw)):
                            dw[f + a, c, kh, kw + t] += sums[a, t]


@njit(cache=CACHE)
def _sum_partials(dw_parts, db_parts):
    """The serial combine of per-thread partial sums: dw_parts (chunks, F, ...), db_parts
    (chunks, F) -> dw (F, ...), db (F,), added in chunk order (a convolution's dw is (F, C, KH, KW),
    a linear layer's dw_t (F, D))."""
    dw = dw_parts[0].copy()
    db = db_parts[0].copy()
    for k in range(1, dw_parts.shape[0]):
        dw += dw_parts[k]
        db += db_parts[k]
    return dw, db


@njit(parallel=prange_only(), cache=CACHE)
def _forward(x, w, b, pad, chunks):
    """y (N, F, OH, OW) and the shifted copies of every image (N, C, KW, H + 2*pad, OW)."""
    N, C, H, W = x.shape
    F, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = H + 2 * pad - KH + 1, W + 2 * pad - KW + 1
    y = np.empty((N, F, OH, OW), x.dtype)
    shifted = np.empty((N, C, KW, H + 2 * pad, OW), x.dtype)
    for k in prange(chunks):
        for n in range(k * N // chunks, (k + 1) * N // chunks):
            _shift_copies(x[n], pad, pad, shifted[n])
            _correlate(shifted[n], w, b, y[n])
    return y, shifted


@njit(parallel=prange_only(), cache=CACHE, fastmath=FASTMATH)
def _backward(dy, shifted, w, pad, H, W, input_grad, chunks):
    """dx (N, C, H, W) (or, without ``input_grad``, an empty array), dw (F, C, KH, KW), db (F,)
    from dy (N, F, OH, OW) and the forward's shifted copies."""
    N, F, OH, OW = dy.shape
    C, KH, KW = w.shape[1], w.shape[2], w.shape[3]
    dtype = w.dtype
    zero = dtype.type(0)
    n = OH * OW
    dx = np.empty((N if input_grad else 0, C, H, W), dtype)
    dw_parts = np.zeros((chunks, F, C, KH, KW), dtype)
    db_parts = np.zeros((chunks, F), dtype)
    for k in prange(chunks):
        d_shifted = np.empty((C, KW, OH + KH - 1, OW), dtype)
        dy_padded = np.zeros((F, n + 2 * (KH - 1) * OW), dtype)
        for i in range(k * N // chunks, (k + 1) * N // chunks):
            g = dy[i].reshape(F, n)
            for f in range(F):
                # Copy dy into the middle of dy_padded, and sum it for db.
                middle = dy_padded[f, (KH - 1) * OW:]
                s = zero
                for q in range(n):
                    v = g[f, q]
                    middle[q] = v
                    s += v
                db_parts[k, f] += s
            _add_weight_grad(dy[i], shifted[i], dw_parts[k])
            if input_grad:
                _correlate_transpose(dy_padded, w, d_shifted)
                _unshift_add(d_shifted, pad, pad, dx[i])
    dw, db = _sum_partials(dw_parts, db_parts)
    return dx, dw, db


def conv2d_forward(x, w, b, stride=1, pad=0):
    """y[n, f] = b[f] + sum over c of x[n, c] (zero-padded by ``pad``) cross-correlated with w[f, c].

    x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW), cache.
    """
    _common.check_conv2d(x, w, b, stride, pad)
    if stride != 1:  # the direct method needs stride 1: hand over to im2col + BLAS
        y, cache = vectorized_conv2d.conv2d_forward(x, w, b, stride, pad)
        return y, (vectorized_conv2d, cache)
    x, w, b = np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(b)
    if winograd.suits(x, w, stride, pad):
        y, state = winograd.conv2d_forward(x, w, b, pad)
        return y, (winograd, state)
    chunks = batch_chunks(x.shape[0])
    y, shifted = _forward(x, w, b, int(pad), chunks)
    return y, (None, (x.shape, shifted, w, int(pad), chunks))


def conv2d_backward(dy, cache, input_grad=True):
    """dy (N, F, OH, OW) -> dx (N, C, H, W) (None if not ``input_grad``), dw (F, C, KH, KW), db (F,)."""
    delegate, state = cache
    if delegate is not None:
        return delegate.conv2d_backward(dy, state, input_grad)
    (N, C, H, W), shifted, w, pad, chunks = state  # the batch cut as the forward cut it
    F, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    expected = (N, F, _common.output_size(H, KH, 1, pad), _common.output_size(W, KW, 1, pad))
    if dy.shape != expected:
        raise ValueError(f"dy must have shape {expected}, got {dy.shape}")
    dy = np.ascontiguousarray(dy, dtype=w.dtype)
    dx, dw, db = _backward(dy, shifted, w, pad, H, W, bool(input_grad), chunks)
    return (dx if input_grad else None), dw, db
