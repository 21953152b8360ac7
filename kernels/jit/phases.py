"""Conv2d, optional ReLU and max-pooling by phase planes: the jit backend's path for convolutions
of one input channel (a grayscale network's first layer: seed_cnn's and lenet's).

Max-pooling reads the convolution's output z at the window positions z[t*i + u, t*j + v]
(pooling stride t, window offsets 0 <= u, v < s for an s x s window). For one offset (u, v),
those values over every window (i, j) form a *phase plane* of PH x PW values:

    Z[f, u*s + v, i*PW + j] = z[f, t*i + u, t*j + v]

Computed phase by phase, the pooling becomes an elementwise maximum over the s*s phase planes,
one long contiguous loop that the compiler vectorises (window by window, with rows of 13 and
stride-2 reads, it could not: seed_cnn's pooling took 55% of its forward pass in ``fused.py``),
and convolution outputs that no window reads (the last row and column of an odd plane) are
never computed. Each phase plane is itself a stride-1 convolution over phase planes of the
input,

    P[c, a, b, i*PW + j] = x_padded[c, t*i + a, t*j + b]     (0 <= a < s + KH - 1, b likewise)

so that tap (kh, kw) of phase (u, v) reads the contiguous plane P[c, u + kh, v + kw]:
``_phase_correlate`` is the direct convolution's micro-kernel (``conv2d._madd4x3``: four
filters from three taps) run over phase planes. P[c, a + t] is P[c, a] one row of windows
further on, so the planes are not stored one by one: ``_phase_copies`` writes t row classes,

    Q[c, r, b, m*PW + j] = x_padded[c, t*m + r, t*j + b]     (P[c, a, b] = Q[c, a % t, b] from row a // t)

about half as many values (seed_cnn: 1,456 per image instead of 16 planes of 169). Overlapping
windows (s > t) compute the outputs they share once per window.

The forward pass records, for every window, the phase of its first maximum in row-major
window order (a NaN beats any number), or -1 where the ReLU sends it no gradient (maximum
<= 0, or NaN); pooling comes before the ReLU (the two commute, see ``vectorized/fused.py``).
It keeps Q for the backward pass (per-thread scratch at inference), which works per image:
- dZ[f, ph] = dy[f] where the window's maximum was phase ph, else 0;
- dw[f, c, kh, kw] = sum over phases (u, v) of dot(dZ[f, u*s + v], P[c, u + kh, v + kw]) and
  db[f] the sum of dy over live windows;
- dx (when asked for): dZ is scattered into the dense gradient dz (F, OH, OW) of the
  convolution's output (adding where windows overlap), and the jit convolution's own backward
  steps for dx run on it (transposed correlation, unshift: see ``conv2d.py``).
Images are split into one chunk per thread, each summing dw and db into its own partials.

3 x 3 kernels under 2 x 2 windows at stride 2 (both models' first layers) have loops of their
own, written out for those sizes: ``_correlate_pool_3x3`` loads the sixteen input values under a
window once, keeps its four convolution outputs in registers and writes only y and phase (Z is
never stored), and ``_weight_grad_3x3`` sums dw and db from dy, phase and Q in one loop (dZ is
built only for dx's scatter). Same results as the general kernels, summed in another order.
Against those (Z, then dZ, written and read again), at batch 64, 2 threads, the whole op timed
in a loop (medians of 500 calls, forward / backward without dx, us): seed_cnn's layer 181 / 94
-> 127 / 63 (forward 98 with ``_phase_copies``'s whole rows), lenet's first layer 640 / 394 ->
390 / 266.

Non-finite inputs: dw sums each window's gradient times the input under it, so convolution
outputs that no window reads never reach dw, and windows that overlap on one maximum add
their shares separately. With an infinity or NaN in x, dw can then lack a NaN the reference's
dense sum has (0 * inf at an unread output) or be NaN where it is +-inf (a * inf + b * inf
for a and b of opposite signs, where the dense sum has (a + b) * inf); y, dx and db are the
reference's. Finite inputs give neither.

Where it is used (``suits``): one input channel, windows of at most 11 x 11 (phases are int8,
a quarter of int32's memory: seed_cnn's epochs about 3% faster). Against ``fused.py``'s direct
method, batch 64, 2 x 2 pooling, 2 threads, forward / backward without dx (ms), before the 3 x 3
loops above: C = 1 on 28 x 28, 8 filters (seed_cnn) 0.34 / 0.08 -> 0.18 / 0.09 in a loop,
0.44 -> 0.28 forward inside an epoch; 32 filters (lenet) 1.21 / 0.50 -> 0.65 / 0.42; 5 x 5
kernels, 16 filters 1.58 / 0.66 -> 0.70 / 0.46. With more channels the convolution outweighs the
pooling and the phase planes' short loops (PH * PW values, against OH * OW) lose: C = 3 on
14 x 14 0.32 / 0.14 -> 0.33 / 0.20, C = 8 0.61 / 0.30 -> 0.75 / 0.46, and a backward pass with
dx costs 15-50% more (dZ, then the scatter).
"""
import numpy as np
from numba import njit, prange

from ._config import CACHE, FASTMATH, batch_chunks, prange_only
from .conv2d import _add_dots4x3, _correlate_transpose, _madd4x3, _sum_partials, _unshift_add
from .maxpool2d import _first_maximum_of_four, _relu_window, _wins

MAX_PHASES = np.iinfo(np.int8).max  # S <= 127 phases: every phase (0..S-1, or -1) fits an int8


def suits(x, size):
    """Whether conv2d_maxpool2d of x (N, C, H, W), stride 1, with size x size windows goes by
    phases: one input channel, and a window's phases numbered in an int8 (size <= 11)."""
    return x.shape[1] == 1 and size * size <= MAX_PHASES


@njit(cache=CACHE)
def _phase_copies(src, pad, stride, PW, Q):
    """Q[c, r, b, m * PW + j] = src[c, stride * m + r - pad, stride * j + b - pad], zero outside src.

    src (C, H, W); Q (C, R, B, M * PW).
    """
    C, H, W = src.shape
    R, B, M = Q.shape[1], Q.shape[2], Q.shape[3] // PW
    if pad == 0 and stride * (M - 1) + R - 1 < H and stride * (PW - 1) + B - 1 < W:
        # Every read inside src (seed_cnn): whole rows, with indices the compiler sees are not
        # negative. 2.5x faster than the general loops below, which clip each row.
        for c in range(C):
            for m in range(M):
                for r in range(R):
                    src_row = src[c, stride * m + r]
                    for b in range(B):
                        row = Q[c, r, b, m * PW:(m + 1) * PW]
                        for j in range(PW):
                            row[j] = src_row[stride * j + b]
        return
    zero = src.dtype.type(0)
    for c in range(C):
        for r in range(R):
            for b in range(B):
                # Columns j0 <= j < j1 read inside src: 0 <= stride * j + b - pad < W.
                j0 = min(PW, max(0, -((b - pad) // stride)))
                j1 = max(j0, min(PW, (W - 1 + pad - b) // stride + 1))
                plane = Q[c, r, b]
                for m in range(M):
                    h = stride * m + r - pad
                    row = plane[m * PW:(m + 1) * PW]
                    if h < 0 or h >= H:
                        row[:] = zero
                        continue
                    for j in range(j0):
                        row[j] = zero
                    for j in range(j0, j1):
                        row[j] = src[c, h, stride * j + b - pad]
                    for j in range(j1, PW):
                        row[j] = zero


@njit(cache=CACHE, fastmath=FASTMATH)
def _phase_correlate(Q, stride, PW, w, bias, size, Z):
    """Z[f, u * size + v, k] = bias[f] + sum over c, kh, kw of w[f, c, kh, kw] * P[c, u + kh, v + kw, k].

    Q from ``_phase_copies``, whose planes P[c, a, b] = Q[c, a % stride, b] from row a // stride
    on (a view longer than n: the loops run over the n values); w (F, C, KH, KW); bias (F,);
    Z (F, size * size, n). Missing filters (F not a multiple of 4) write to a spare plane, missing
    taps read zeros with weight 0.
    """
    F, C, KH, KW = w.shape
    n = Z.shape[2]
    zero = w.dtype.type(0)
    no_input = np.zeros(n, Z.dtype)
    spare = np.zeros((3, n), Z.dtype)
    ws = np.empty((4, 3), w.dtype)
    for f in range(0, F, 4):
        for u in range(size):
            for v in range(size):
                phase = u * size + v
                o0 = Z[f, phase]
                o1 = Z[f + 1, phase] if f + 1 < F else spare[0]
                o2 = Z[f + 2, phase] if f + 2 < F else spare[1]
                o3 = Z[f + 3, phase] if f + 3 < F else spare[2]
                for a in range(min(4, F - f)):
                    Z[f + a, phase, :] = bias[f + a]
                for c in range(C):
                    for kh in range(KH):
                        # P[c, u + kh, b] is planes[b, start:] (divisions hoisted: per tap they cost 30%).
                        planes, start = Q[c, (u + kh) % stride], (u + kh) // stride * PW
                        for kw in range(0, KW, 3):
                            i0 = planes[v + kw, start:]
                            i1 = planes[v + kw + 1, start:] if kw + 1 < KW else no_input
                            i2 = planes[v + kw + 2, start:] if kw + 2 < KW else no_input
                            for a in range(4):
                                for t in range(3):
                                    ws[a, t] = w[f + a, c, kh, kw + t] if f + a < F and kw + t < KW else zero
                            _madd4x3(o0, o1, o2, o3, i0, i1, i2, ws)


@njit(cache=CACHE)
def _phase_pool(Z, relu, y, phase):
    """y[f, k] = max over the phases of Z[f, :, k] (ReLU'd if ``relu``); phase[f, k] = the first
    phase holding it (NaN wins), or -1 if ``relu`` and the maximum is not > 0.

    Z (F, S, n); y (F, n); phase (F, n) int8. Every loop runs along k, without branches, and
    reads each value once (written with slice assignments and repeated reads of best[k], the
    same loops ran 2x slower).
    """
    F, S, n = Z.shape
    zero = Z.dtype.type(0)
    for f in range(F):
        best, at = y[f], phase[f]
        first = Z[f, 0]
        for k in range(n):
            best[k] = first[k]
            at[k] = 0
        for p in range(1, S):
            plane = Z[f, p]
            for k in range(n):
                v, m = plane[k], best[k]
                wins = _wins(v, m)
                best[k] = v if wins else m
                at[k] = p if wins else at[k]
        if relu:
            for k in range(n):
                best[k], at[k] = _relu_window(best[k], at[k], zero)


@njit(cache=CACHE, fastmath=FASTMATH)
def _phase_weight_grad(dZ, Q, stride, PW, size, dw):
    """dw[f, c, kh, kw] += sum over u, v, k of dZ[f, u * size + v, k] * P[c, u + kh, v + kw, k].

    dZ (F, size * size, n); Q as in ``_phase_correlate``; dw (F, C, KH, KW). Four filters by three
    kw at a time (``conv2d._add_dots4x3``, phase by phase); a missing filter or kw repeats the
    last real one and its sums are dropped.
    """
    F, C, KH, KW = dw.shape
    sums = np.empty((4, 3), dZ.dtype)
    for f in range(0, F, 4):
        f1, f2, f3 = min(f + 1, F - 1), min(f + 2, F - 1), min(f + 3, F - 1)
        for c in range(C):
            for kh in range(KH):
                for kw in range(0, KW, 3):
                    kw1, kw2 = min(kw + 1, KW - 1), min(kw + 2, KW - 1)
                    sums[:] = 0
                    for u in range(size):
                        planes, start = Q[c, (u + kh) % stride], (u + kh) // stride * PW
                        for v in range(size):
                            phase = u * size + v
                            d0, d1, d2, d3 = dZ[f, phase], dZ[f1, phase], dZ[f2, phase], dZ[f3, phase]
                            _add_dots4x3(d0, d1, d2, d3, planes[v + kw, start:], planes[v + kw1, start:],
                                         planes[v + kw2, start:], sums)
                    for a in range(min(4, F - f)):
                        for t in range(min(3, KW - kw)):
                            dw[f + a, c, kh, kw + t] += sums[a, t]


@njit(cache=CACHE)
def _takes_3x3_windows(KH, KW, size, stride):
    """Whether the kernels below serve this shape: 3 x 3 kernels, 2 x 2 windows at stride 2."""
    return KH == 3 and KW == 3 and size == 2 and stride == 2


@njit(cache=CACHE, inline="always")
def _planes_3x3(Q, PW):
    """The sixteen planes P[0, a, b] (0 <= a, b < 4) that 3 x 3 kernels under 2 x 2 windows at
    stride 2 read, as views of Q[0] (``_phase_copies``)."""
    return ((Q[0, 0, 0], Q[0, 0, 1], Q[0, 0, 2], Q[0, 0, 3]),
            (Q[0, 1, 0], Q[0, 1, 1], Q[0, 1, 2], Q[0, 1, 3]),
            (Q[0, 0, 0, PW:], Q[0, 0, 1, PW:], Q[0, 0, 2, PW:], Q[0, 0, 3, PW:]),
            (Q[0, 1, 0, PW:], Q[0, 1, 1, PW:], Q[0, 1, 2, PW:], Q[0, 1, 3, PW:]))


@njit(cache=CACHE, fastmath=FASTMATH)
def _correlate_pool_3x3(Q, PW, w, bias, relu, y, phase):
    """``_phase_correlate`` then ``_phase_pool`` for 3 x 3 kernels and 2 x 2 windows at stride 2
    (seed_cnn's and lenet's first layers), one filter at a time: for each window, the sixteen
    input values under it are loaded once, its four convolution outputs (phases 0..3) are summed
    and pooled in registers, and only y and phase are written.

    Q (1, 2, 4, (PH + 1) * PW) from ``_phase_copies``; w (F, 1, 3, 3); bias (F,); y and phase
    (F, PH * PW).
    """
    F, n = y.shape
    zero = y.dtype.type(0)
    (p00, p01, p02, p03), (p10, p11, p12, p13), (p20, p21, p22, p23), (p30, p31, p32, p33) = _planes_3x3(Q, PW)
    for f in range(F):
        w00, w01, w02 = w[f, 0, 0, 0], w[f, 0, 0, 1], w[f, 0, 0, 2]
        w10, w11, w12 = w[f, 0, 1, 0], w[f, 0, 1, 1], w[f, 0, 1, 2]
        w20, w21, w22 = w[f, 0, 2, 0], w[f, 0, 2, 1], w[f, 0, 2, 2]
        b = bias[f]
        best_row, at_row = y[f], phase[f]
        for k in range(n):
            x00, x01, x02, x03 = p00[k], p01[k], p02[k], p03[k]
            x10, x11, x12, x13 = p10[k], p11[k], p12[k], p13[k]
            x20, x21, x22, x23 = p20[k], p21[k], p22[k], p23[k]
            x30, x31, x32, x33 = p30[k], p31[k], p32[k], p33[k]
            # Phase (u, v) = 2u + v reads P[u + kh, v + kw] for tap (kh, kw).
            z0 = (b + (w00 * x00 + w01 * x01 + w02 * x02) + (w10 * x10 + w11 * x11 + w12 * x12)
                  + (w20 * x20 + w21 * x21 + w22 * x22))
            z1 = (b + (w00 * x01 + w01 * x02 + w02 * x03) + (w10 * x11 + w11 * x12 + w12 * x13)
                  + (w20 * x21 + w21 * x22 + w22 * x23))
            z2 = (b + (w00 * x10 + w01 * x11 + w02 * x12) + (w10 * x20 + w11 * x21 + w12 * x22)
                  + (w20 * x30 + w21 * x31 + w22 * x32))
            z3 = (b + (w00 * x11 + w01 * x12 + w02 * x13) + (w10 * x21 + w11 * x22 + w12 * x23)
                  + (w20 * x31 + w21 * x32 + w22 * x33))
            best, at = _first_maximum_of_four(z0, z1, z2, z3, 0, 1, 2, 3)  # phases in the window's row order
            if relu:
                best, at = _relu_window(best, at, zero)
            best_row[k], at_row[k] = best, at


@njit(cache=CACHE, fastmath=FASTMATH)
def _weight_grad_3x3(g, at, Q, PW, dw, db):
    """dw[f, 0, kh, kw] += sum over k of dy[f, k] * P[0, u + kh, v + kw, k], (u, v) the phase that
    won window k (none if -1), and db[f] += sum of dy[f] over live windows: the backward pass's
    dZ and ``_phase_weight_grad`` in one loop, for the shapes of ``_correlate_pool_3x3``.

    g, at (F, PH * PW): dy and phase of one image; Q as there; dw (F, 1, 3, 3); db (F,).
    """
    F, n = g.shape
    zero = g.dtype.type(0)
    (p00, p01, p02, p03), (p10, p11, p12, p13), (p20, p21, p22, p23), (p30, p31, p32, p33) = _planes_3x3(Q, PW)
    for f in range(F):
        g_row, at_row = g[f], at[f]
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = sb = zero
        for k in range(n):
            d, p = g_row[k], at_row[k]
            g0, g1 = (d if p == 0 else zero), (d if p == 1 else zero)
            g2, g3 = (d if p == 2 else zero), (d if p == 3 else zero)
            sb += d if p >= 0 else zero
            x00, x01, x02, x03 = p00[k], p01[k], p02[k], p03[k]
            x10, x11, x12, x13 = p10[k], p11[k], p12[k], p13[k]
            x20, x21, x22, x23 = p20[k], p21[k], p22[k], p23[k]
            x30, x31, x32, x33 = p30[k], p31[k], p32[k], p33[k]
            s00 += g0 * x00 + g1 * x01 + g2 * x10 + g3 * x11
            s01 += g0 * x01 + g1 * x02 + g2 * x11 + g3 * x12
            s02 += g0 * x02 + g1 * x03 + g2 * x12 + g3 * x13
            s10 += g0 * x10 + g1 * x11 + g2 * x20 + g3 * x21
            s11 += g0 * x11 + g1 * x12 + g2 * x21 + g3 * x22
            s12 += g0 * x12 + g1 * x13 + g2 * x22 + g3 * x23
            s20 += g0 * x20 + g1 * x21 + g2 * x30 + g3 * x31
            s21 += g0 * x21 + g1 * x22 + g2 * x31 + g3 * x32
            s22 += g0 * x22 + g1 * x23 + g2 * x32 + g3 * x33
        dw[f, 0, 0, 0] += s00
        dw[f, 0, 0, 1] += s01
        dw[f, 0, 0, 2] += s02
        dw[f, 0, 1, 0] += s10
        dw[f, 0, 1, 1] += s11
        dw[f, 0, 1, 2] += s12
        dw[f, 0, 2, 0] += s20
        dw[f, 0, 2, 1] += s21
        dw[f, 0, 2, 2] += s22
        db[f] += sb


@njit(parallel=prange_only(), cache=CACHE)
def _forward(x, w, b, pad, size, stride, relu, PH, PW, keep, chunks):
    """y (N, F, PH, PW), and what backward needs: phase (N, F, PH * PW) int8 and every image's
    phase copies Q. Without ``keep`` those two are only per-thread scratch space (one image's
    worth each), so inference allocates nothing batch-sized but y."""
    N, C = x.shape[0], x.shape[1]
    F, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    n = PH * PW
    # Q's row classes: P[c, a] for a < size + KH - 1 is class a % stride from row a // stride on.
    classes, rows = min(stride, size + KH - 1), PH + (size + KH - 2) // stride
    y = np.empty((N, F, PH, PW), x.dtype)
    phase = np.empty((N if keep else chunks, F, n), np.int8)
    Q = np.empty((N if keep else chunks, C, classes, size + KW - 1, rows * PW), x.dtype)
    three = _takes_3x3_windows(KH, KW, size, stride)
    for k in prange(chunks):
        Z = np.empty((0 if three else F, size * size, n), x.dtype)
        thread = np.int64(k)  # prange's index is unsigned: make it an image index's type
        for i in range(k * N // chunks, (k + 1) * N // chunks):
            m = i if keep else thread  # this image's slot, or the thread's scratch slot
            _phase_copies(x[i], pad, stride, PW, Q[m])
            if three:
                _correlate_pool_3x3(Q[m], PW, w, b, relu, y[i].reshape(F, n), phase[m])
            else:
                _phase_correlate(Q[m], stride, PW, w, b, size, Z)
                _phase_pool(Z, relu, y[i].reshape(F, n), phase[m])
    return y, phase, Q


@njit(parallel=prange_only(), cache=CACHE, fastmath=FASTMATH)
def _backward(dy, phase, Q, w, pad, size, stride, H, W, OH, OW, input_grad, chunks):
    """dx (N, C, H, W) (or, without ``input_grad``, an empty array), dw (F, C, KH, KW), db (F,)
    from dy (N, F, PH, PW)."""
    N, F, PH, PW = dy.shape
    n = PH * PW
    S = size * size
    C, KH, KW = w.shape[1], w.shape[2], w.shape[3]
    dtype = w.dtype
    zero = dtype.type(0)
    dx = np.empty((N if input_grad else 0, C, H, W), dtype)
    dw_parts = np.zeros((chunks, F, C, KH, KW), dtype)
    db_parts = np.zeros((chunks, F), dtype)
    three = _takes_3x3_windows(KH, KW, size, stride)
    for k in prange(chunks):
        dZ = np.empty((F if input_grad or not three else 0, S, n), dtype)
        # For dx only: each dz[f] flat, with KH - 1 rows of zeros before and after (see
        # _correlate_transpose), and its transposed correlation.
        d_shifted = np.empty((C if input_grad else 0, KW, OH + KH - 1, OW), dtype)
        dy_padded = np.zeros((F if input_grad else 0, (OH + 2 * (KH - 1)) * OW), dtype)
        for i in range(k * N // chunks, (k + 1) * N // chunks):
            g = dy[i].reshape(F, n)
            at = phase[i]
            if three:
                _weight_grad_3x3(g, at, Q[i], PW, dw_parts[k], db_parts[k])
            if input_grad or not three:
                for f in range(F):
                    for p in range(S):
                        plane = dZ[f, p]
                        for q in range(n):
                            plane[q] = g[f, q] if at[f, q] == p else zero
            if not three:
                for f in range(F):
                    s = zero
                    for q in range(n):
                        s += g[f, q] if at[f, q] >= 0 else zero
                    db_parts[k, f] += s
                _phase_weight_grad(dZ, Q[i], stride, PW, size, dw_parts[k])
            if input_grad:
                dz = dy_padded[:, (KH - 1) * OW:(KH - 1 + OH) * OW]
                dz[:] = zero
                for f in range(F):
                    for p in range(S):
                        offset = (p // size) * OW + p % size  # phase (u, v) is z[t*i + u, t*j + v]
                        for r in range(PH):
                            for j in range(PW):
                                dz[f, stride * (r * OW + j) + offset] += dZ[f, p, r * PW + j]
                _correlate_transpose(dy_padded, w, d_shifted)
                _unshift_add(d_shifted, pad, pad, dx[i])
    dw, db = _sum_partials(dw_parts, db_parts)
    return dx, dw, db


def conv2d_maxpool2d_forward(x, w, b, pad, size, stride, relu, PH, PW, keep):
    """y (N, F, PH, PW) = max-pooling of (ReLU'd if ``relu``) conv2d(x), and the state for
    ``conv2d_maxpool2d_backward`` (None without ``keep``). Arguments contiguous, checked and
    ``suits``; stride is the pooling's (the convolution's is 1)."""
    chunks = batch_chunks(x.shape[0])
    y, phase, Q = _forward(x, w, b, int(pad), int(size), int(stride), bool(relu), PH, PW, bool(keep), chunks)
    return y, ((x.shape, phase, Q, w, int(pad), int(size), int(stride), chunks) if keep else None)


def conv2d_maxpool2d_backward(dy, state, input_grad=True):
    """dy (N, F, PH, PW) -> dx (N, C, H, W) (None if not ``input_grad``), dw (F, C, KH, KW), db (F,)."""
    if state is None:
        raise ValueError("conv2d_maxpool2d_backward: the forward pass ran with need_backward=False")
    (N, _, H, W), phase, Q, w, pad, size, stride, chunks = state  # the batch cut as the forward cut it
    F, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = H + 2 * pad - KH + 1, W + 2 * pad - KW + 1
    expected = (N, F, (OH - size) // stride + 1, (OW - size) // stride + 1)
    if dy.shape != expected:
        raise ValueError(f"dy must have shape {expected}, got {dy.shape}")
    dy = np.ascontiguousarray(dy, dtype=w.dtype)
    dx, dw, db = _backward(dy, phase, Q, w, pad, size, stride, H, W, OH, OW, bool(input_grad), chunks)
    return (dx if input_grad else None), dw, db
