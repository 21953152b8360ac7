"""3 x 3 stride-1 convolution by Winograd's minimal filtering F(2 x 2, 3 x 3) (Lavin & Gray, 2016).

The output is cut into 2 x 2 tiles; tile t = (ty, tx) of an image reads the 4 x 4 patch d of the
zero-padded input at rows 2 ty .. 2 ty + 3, columns 2 tx .. 2 tx + 3, and

    y_tile = A^T [ sum over c of (G g_fc G^T) * (B^T d_c B) ] A          (* elementwise, 4 x 4)

with g_fc the 3 x 3 filter (f, c) and

    B^T = [[1,  0, -1,  0],     G = [[1,    0,    0  ],     A^T = [[1, 1,  1,  0],
           [0,  1,  1,  0],          [1/2,  1/2,  1/2],            [0, 1, -1, -1]]
           [0, -1,  1,  0],          [1/2, -1/2,  1/2],
           [0,  1,  0, -1]]          [0,    0,    1  ]]

(in one dimension, y0 = g0 d0 + g1 d1 + g2 d2 and y1 = g0 d1 + g1 d2 + g2 d3 from four
multiplications instead of six). For each of the 16 entries k of a transformed tile, the sum
over channels is one matrix product over T tiles (those of a slice of the batch, below):

    M[k] (T, F) = V[k] (T, C) @ U[k] (C, F),    V = transformed patches, U = transformed filters,

done by BLAS: 16 F C T multiply-adds instead of the direct method's 36 F C T (2.25x fewer).
The transforms are additions and halvings, in Numba, over channels-last scratch copies of each
image so that every inner loop runs along contiguous channels.

Threads. Each thread takes one part of the batch (``_in_parts``: this one and Python worker
threads, as many in all as Numba's thread count) and runs every stage over small slices of it,
so that what one stage writes is still in that core's cache when the next reads it; OpenBLAS is
held to one thread for the call (through threadpoolctl) so that each product runs on the thread
that asked for it. This is a process-wide setting: a BLAS product run by another thread of the
program during the call runs on one thread too.

The backward pass is the adjoint of each linear stage, in reverse order:
    dM[k] = A dY_tile A^T                    (transposed output transform; db sums dY)
    dU[k] = dM[k]^T V[k],  dw = G^T dU G     (BLAS, (F, C); then the transposed filter transform)
    dV[k] = dM[k] U[k]^T,  dx = sum of B dV_tile B^T over the patches each pixel is in
so it keeps the forward's V and U, not x. The transforms add up to four values before
multiplying, so rounding differs from the direct sums, within the same bounds (the parity
tests hold this backend to the same tolerance as every other; the largest float32 error on
their Winograd cases is 1% of it). Non-finite inputs: the transforms subtract neighbouring
values and multiply by zero entries of G, so an infinity can come out as NaN (inf - inf)
where the direct sum gives +-inf, and a NaN can reach a few more weight-gradient entries
(0 * NaN) than in the direct method. Finite inputs give neither unless a transform
overflows: they add up to four values before multiplying, so inputs within a factor of a
few of the dtype's largest number can give +-inf where the direct sum does not.

Why F(2 x 2, 3 x 3) and not F(4 x 4, 3 x 3) (36 products for 16 outputs): tried on lenet's
second layer at batch 64, its products took 2.8 instead of 3.7 ms, but its transforms, with
36 values per tile to keep in registers and 36 output streams, took 4.6 ms (6.2 in one
pass per tile) instead of 2.1.

Memory layout. V, M and their gradients are (16, R, K) arrays written by 16 streams at once
(one per k). With R * K * itemsize a multiple of 4096 bytes (lenet's V at batch 64: R = 3136 tiles
of 32 float32 channels) all 16 streams fall into the same L1 cache sets and the patch transform
ran 8x slower; ``_Plan.buffer`` makes R odd, one row past T where T is even, so that the
streams spread over the sets (over 8 of them at worst, for K * itemsize a multiple of 512).
Only the first T rows are used.

Where it is used (``suits``): 3 x 3 kernels, stride 1, at least ``MIN_CHANNELS`` input channels
and output planes of at most ``MAX_PLANE`` pixels. Forward and backward with 2 x 2 pooling,
batch 64, 2 threads, against the direct method (``conv2d.py``), measured when these limits were
chosen; the transforms have become faster since (lenet's second layer, C = 32: 7.2 ms against
11.6 now). On 14 x 14 planes with 64
filters, C = 8: 5.1 vs 3.5 ms, C = 16: 6.0 vs 6.2, C = 32: 7.8 vs 11.5, C = 64: 12.0 vs 22.4;
on 7 x 7, C = 32: 3.1 vs 5.7. On 28 x 28 planes the direct method's long rows keep it ahead
up to C = 64 (32 filters: 47.6 vs 47.4 ms), and on one input channel (seed_cnn's and lenet's
first layers) the transforms cost 4x what the products save.
"""
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np
from numba import njit
from threadpoolctl import ThreadpoolController

from ._config import CACHE, FASTMATH, batch_chunks
from .maxpool2d import _first_maximum_of_four, _relu_window, _wins

MIN_CHANNELS = 16
MAX_PLANE = 16 * 16

# Filter transform: G rows (1, 0, 0), (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1).
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def suits(x, w, stride, pad):
    """Whether this module should convolve x (N, C, H, W) with filters w (F, C, KH, KW)."""
    F, C, KH, KW = w.shape
    H, W = x.shape[2:]
    plane = (H + 2 * pad - 2) * (W + 2 * pad - 2)
    return KH == 3 and KW == 3 and stride == 1 and C >= MIN_CHANNELS and plane <= MAX_PLANE


@njit(cache=CACHE)
def _filter_transform(w, G):
    """U (16, C, F): U[4a + b, c, f] = (G w[f, c] G^T)[a, b]. w (F, C, 3, 3); G (4, 3)."""
    F, C = w.shape[0], w.shape[1]
    U = np.empty((16, C, F), w.dtype)
    for f in range(F):
        for c in range(C):
            for a in range(4):
                # Row a of G w[f, c], then its products with the rows of G.
                r0 = G[a, 0] * w[f, c, 0, 0] + G[a, 1] * w[f, c, 1, 0] + G[a, 2] * w[f, c, 2, 0]
                r1 = G[a, 0] * w[f, c, 0, 1] + G[a, 1] * w[f, c, 1, 1] + G[a, 2] * w[f, c, 2, 1]
                r2 = G[a, 0] * w[f, c, 0, 2] + G[a, 1] * w[f, c, 1, 2] + G[a, 2] * w[f, c, 2, 2]
                for b in range(4):
                    U[4 * a + b, c, f] = r0 * G[b, 0] + r1 * G[b, 1] + r2 * G[b, 2]
    return U


@njit(cache=CACHE)
def _filter_transform_adjoint(dU, G):
    """dw (F, C, 3, 3): dw[f, c] = G^T dU_fc G with dU_fc[a, b] = dU[4a + b, f, c], the transpose
    of ``_filter_transform``. dU (16, F, C); G (4, 3)."""
    F, C = dU.shape[1], dU.shape[2]
    dw = np.empty((F, C, 3, 3), dU.dtype)
    for f in range(F):
        for c in range(C):
            for i in range(3):
                # Row i of G^T dU_fc, then its products with the columns of G.
                r0 = G[0, i] * dU[0, f, c] + G[1, i] * dU[4, f, c] + G[2, i] * dU[8, f, c] + G[3, i] * dU[12, f, c]
                r1 = G[0, i] * dU[1, f, c] + G[1, i] * dU[5, f, c] + G[2, i] * dU[9, f, c] + G[3, i] * dU[13, f, c]
                r2 = G[0, i] * dU[2, f, c] + G[1, i] * dU[6, f, c] + G[2, i] * dU[10, f, c] + G[3, i] * dU[14, f, c]
                r3 = G[0, i] * dU[3, f, c] + G[1, i] * dU[7, f, c] + G[2, i] * dU[11, f, c] + G[3, i] * dU[15, f, c]
                for j in range(3):
                    dw[f, c, i, j] = r0 * G[0, j] + r1 * G[1, j] + r2 * G[2, j] + r3 * G[3, j]
    return dw


@njit(cache=CACHE, fastmath=FASTMATH)
def _patch_transform(padded, V, start):
    """V[4a + b, start + ty * TW + tx, c] = (B^T d B)[a, b] for the 4 x 4 patch d of channel c at
    (2 ty, 2 tx). padded (2 TH + 2, 2 TW + 2, C), channels last, zero where the input has no pixel."""
    TH, TW = (padded.shape[0] - 2) // 2, (padded.shape[1] - 2) // 2
    C = padded.shape[2]
    for ty in range(TH):
        r0, r1, r2, r3 = padded[2 * ty], padded[2 * ty + 1], padded[2 * ty + 2], padded[2 * ty + 3]
        for tx in range(TW):
            i, s = start + ty * TW + tx, 2 * tx
            for c in range(C):
                # Rows first (B^T d): e_a[j] for the four patch columns j.
                e00, e01, e02, e03 = r0[s, c] - r2[s, c], r0[s + 1, c] - r2[s + 1, c], r0[s + 2, c] - r2[s + 2, c], r0[s + 3, c] - r2[s + 3, c]
                e10, e11, e12, e13 = r1[s, c] + r2[s, c], r1[s + 1, c] + r2[s + 1, c], r1[s + 2, c] + r2[s + 2, c], r1[s + 3, c] + r2[s + 3, c]
                e20, e21, e22, e23 = r2[s, c] - r1[s, c], r2[s + 1, c] - r1[s + 1, c], r2[s + 2, c] - r1[s + 2, c], r2[s + 3, c] - r1[s + 3, c]
                e30, e31, e32, e33 = r1[s, c] - r3[s, c], r1[s + 1, c] - r3[s + 1, c], r1[s + 2, c] - r3[s + 2, c], r1[s + 3, c] - r3[s + 3, c]
                # Then columns (... B).
                V[0, i, c], V[1, i, c], V[2, i, c], V[3, i, c] = e00 - e02, e01 + e02, e02 - e01, e01 - e03
                V[4, i, c], V[5, i, c], V[6, i, c], V[7, i, c] = e10 - e12, e11 + e12, e12 - e11, e11 - e13
                V[8, i, c], V[9, i, c], V[10, i, c], V[11, i, c] = e20 - e22, e21 + e22, e22 - e21, e21 - e23
                V[12, i, c], V[13, i, c], V[14, i, c], V[15, i, c] = e30 - e32, e31 + e32, e32 - e31, e31 - e33


@njit(cache=CACHE, fastmath=FASTMATH)
def _patch_transform_adjoint(dV, start, d_padded):
    """d_padded[:, :, c] = sum over tiles of B dV_tile B^T, added at the tile's patch: the transpose
    of ``_patch_transform``. dV (16, T, C); d_padded (2 TH + 2, 2 TW + 2, C), overwritten."""
    TH, TW = (d_padded.shape[0] - 2) // 2, (d_padded.shape[1] - 2) // 2
    C = d_padded.shape[2]
    d_padded[:] = 0
    for ty in range(TH):
        r0, r1, r2, r3 = d_padded[2 * ty], d_padded[2 * ty + 1], d_padded[2 * ty + 2], d_padded[2 * ty + 3]
        for tx in range(TW):
            i, s = start + ty * TW + tx, 2 * tx
            for c in range(C):
                # Columns first (the transpose of "... B"): row a of the tile gives fa0..fa3.
                v0, v1, v2, v3 = dV[0, i, c], dV[1, i, c], dV[2, i, c], dV[3, i, c]
                f00, f01, f02, f03 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                v0, v1, v2, v3 = dV[4, i, c], dV[5, i, c], dV[6, i, c], dV[7, i, c]
                f10, f11, f12, f13 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                v0, v1, v2, v3 = dV[8, i, c], dV[9, i, c], dV[10, i, c], dV[11, i, c]
                f20, f21, f22, f23 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                v0, v1, v2, v3 = dV[12, i, c], dV[13, i, c], dV[14, i, c], dV[15, i, c]
                f30, f31, f32, f33 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                # Then rows (the transpose of B^T d), added into the patch.
                r0[s, c] += f00
                r0[s + 1, c] += f01
                r0[s + 2, c] += f02
                r0[s + 3, c] += f03
                r1[s, c] += f10 - f20 + f30
                r1[s + 1, c] += f11 - f21 + f31
                r1[s + 2, c] += f12 - f22 + f32
                r1[s + 3, c] += f13 - f23 + f33
                r2[s, c] += f10 + f20 - f00
                r2[s + 1, c] += f11 + f21 - f01
                r2[s + 2, c] += f12 + f22 - f02
                r2[s + 3, c] += f13 + f23 - f03
                r3[s, c] -= f30
                r3[s + 1, c] -= f31
                r3[s + 2, c] -= f32
                r3[s + 3, c] -= f33


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _tile_pixels(M, t, f, bias):
    """Tile t's four outputs for filter f, bias + A^T m A with m[k] = M[k, t, f]: the pixels
    (0, 0), (0, 1), (1, 0), (1, 1) of the tile. M (16, T, F)."""
    # Rows (A^T m): g_a[j] for the four columns j.
    g00 = M[0, t, f] + M[4, t, f] + M[8, t, f]
    g01 = M[1, t, f] + M[5, t, f] + M[9, t, f]
    g02 = M[2, t, f] + M[6, t, f] + M[10, t, f]
    g03 = M[3, t, f] + M[7, t, f] + M[11, t, f]
    g10 = M[4, t, f] - M[8, t, f] - M[12, t, f]
    g11 = M[5, t, f] - M[9, t, f] - M[13, t, f]
    g12 = M[6, t, f] - M[10, t, f] - M[14, t, f]
    g13 = M[7, t, f] - M[11, t, f] - M[15, t, f]
    return (bias + g00 + g01 + g02, bias + g01 - g02 - g03,
            bias + g10 + g11 + g12, bias + g11 - g12 - g13)


@njit(cache=CACHE, fastmath=FASTMATH)
def _tile_output(M, start, b, z):
    """z[2 ty + a, 2 tx + b', f] = b[f] + (A^T m A)[a, b'] with m[k] = M[k, start + ty * TW + tx, f],
    for the entries inside z. M (16, T, F); z (OH, OW, F), channels last."""
    OH, OW, F = z.shape
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    for ty in range(TH):
        h = 2 * ty
        for tx in range(TW):
            i, w = start + ty * TW + tx, 2 * tx
            for f in range(F):
                p00, p01, p10, p11 = _tile_pixels(M, i, f, b[f])
                z[h, w, f] = p00
                if w + 1 < OW:
                    z[h, w + 1, f] = p01
                if h + 1 < OH:
                    z[h + 1, w, f] = p10
                    if w + 1 < OW:
                        z[h + 1, w + 1, f] = p11


@njit(cache=CACHE, fastmath=FASTMATH)
def _tile_output_adjoint(dz, start, dM):
    """dM[k, start + t, f] = (A dz_tile A^T)[k], with dz zero outside its OH x OW: the transpose of
    ``_tile_output``. dz (OH, OW, F), channels last; dM (16, T, F)."""
    OH, OW, F = dz.shape
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    zero = dz.dtype.type(0)
    for ty in range(TH):
        h = 2 * ty
        for tx in range(TW):
            i, w = start + ty * TW + tx, 2 * tx
            for f in range(F):
                y00 = dz[h, w, f]
                y01 = dz[h, w + 1, f] if w + 1 < OW else zero
                y10 = dz[h + 1, w, f] if h + 1 < OH else zero
                y11 = dz[h + 1, w + 1, f] if h + 1 < OH and w + 1 < OW else zero
                # Columns (the transpose of "... A"), for both rows.
                c00, c01, c02, c03 = y00, y00 + y01, y00 - y01, -y01
                c10, c11, c12, c13 = y10, y10 + y11, y10 - y11, -y11
                # Rows (the transpose of A^T ...).
                dM[0, i, f], dM[1, i, f], dM[2, i, f], dM[3, i, f] = c00, c01, c02, c03
                dM[4, i, f], dM[5, i, f], dM[6, i, f], dM[7, i, f] = c00 + c10, c01 + c11, c02 + c12, c03 + c13
                dM[8, i, f], dM[9, i, f], dM[10, i, f], dM[11, i, f] = c00 - c10, c01 - c11, c02 - c12, c03 - c13
                dM[12, i, f], dM[13, i, f], dM[14, i, f], dM[15, i, f] = -c10, -c11, -c12, -c13


@njit(cache=CACHE, fastmath=FASTMATH)
def _tile_windows(M, start, b, OW, relu, y, where):
    """2 x 2 max-pooling with stride 2, whose windows are the output tiles: y[f, i, j] = the
    largest of tile (i, j)'s four outputs (``_tile_output``'s), ReLU'd if ``relu``, and where[f, i, j]
    its flat index h * OW + w, by ``_pool_channels_last``'s rules. M (16, T, F); y, where (F, PH, PW).
    lenet's second layer, 5 images: 47 us, against 66 for ``_tile_output`` then the pooling."""
    F, PH, PW = y.shape
    TW = (OW + 1) // 2
    zero = M.dtype.type(0)
    for i in range(PH):
        for j in range(PW):
            t, flat = start + i * TW + j, 2 * i * OW + 2 * j
            for f in range(F):
                p00, p01, p10, p11 = _tile_pixels(M, t, f, b[f])
                best, at = _first_maximum_of_four(p00, p01, p10, p11, flat, flat + 1, flat + OW, flat + OW + 1)
                if relu:
                    best, at = _relu_window(best, at, zero)
                y[f, i, j], where[f, i, j] = best, at


@njit(nogil=True, cache=CACHE)
def _transform_patches(x, pad, V):
    """V[:, n * TH * TW + t] = image n's transformed patches. x (n, C, H, W); V (16, >= n TH TW, C)."""
    N, C, H, W = x.shape
    TH, TW = (H + 2 * pad - 1) // 2, (W + 2 * pad - 1) // 2
    padded = np.zeros((2 * TH + 2, 2 * TW + 2, C), x.dtype)  # the border stays zero
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    padded[pad + h, pad + w, c] = x[n, c, h, w]
        _patch_transform(padded, V, n * TH * TW)


@njit(nogil=True, cache=CACHE)
def _patches_adjoint(dV, pad, dx):
    """dx (n, C, H, W) from dV (16, >= n TH TW, C), image n's tiles from row n * TH * TW on: the
    transpose of ``_transform_patches``."""
    N, C, H, W = dx.shape
    TH, TW = (H + 2 * pad - 1) // 2, (W + 2 * pad - 1) // 2
    d_padded = np.empty((2 * TH + 2, 2 * TW + 2, C), dV.dtype)
    for n in range(N):
        _patch_transform_adjoint(dV, n * TH * TW, d_padded)
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    dx[n, c, h, w] = d_padded[pad + h, pad + w, c]


@njit(cache=CACHE)
def _to_planes(z_last, z):
    """z[f, h, w] = z_last[h, w, f]. z_last (OH, OW, F); z (F, OH, OW)."""
    OH, OW, F = z_last.shape
    for f in range(F):
        for h in range(OH):
            for w in range(OW):
                z[f, h, w] = z_last[h, w, f]


@njit(cache=CACHE)
def _pool_channels_last(z, size, stride, relu, y, where):
    """Max-pooling by ``maxpool2d.py``'s rules for an image whose channels come last: y[f, i, j] =
    max of window (i, j) of z[:, :, f], ReLU'd if ``relu``; where[f, i, j] its flat index
    h * OW + w (first maximum, NaN wins), or -1 if ``relu`` and the maximum is not > 0.

    z (OH, OW, F); y, where (F, PH, PW). Every inner loop runs along the F contiguous channels.
    """
    OH, OW, F = z.shape
    PH, PW = y.shape[1], y.shape[2]
    zero = z.dtype.type(0)
    best = np.empty(F, z.dtype)
    at = np.empty(F, np.int32)
    for i in range(PH):
        for j in range(PW):
            h0, w0 = i * stride, j * stride
            best[:] = z[h0, w0]
            at[:] = h0 * OW + w0
            for h in range(h0, h0 + size):
                for w in range(w0 + (h == h0), w0 + size):  # the window's first pixel is taken
                    pixel, flat = z[h, w], h * OW + w
                    for f in range(F):
                        v = pixel[f]
                        take = _wins(v, best[f])
                        best[f] = v if take else best[f]
                        at[f] = flat if take else at[f]
            for f in range(F):
                top, flat = best[f], at[f]
                if relu:
                    top, flat = _relu_window(top, flat, zero)
                y[f, i, j], where[f, i, j] = top, flat


@njit(nogil=True, cache=CACHE)
def _outputs(M, b, y):
    """y (n, F, OH, OW) from the products M (16, >= n TH TW, F), image n's tiles from row
    n * TH * TW on, and the bias b (F,)."""
    N, F, OH, OW = y.shape
    z_last = np.empty((OH, OW, F), M.dtype)
    for n in range(N):
        _tile_output(M, n * ((OH + 1) // 2) * ((OW + 1) // 2), b, z_last)
        _to_planes(z_last, y[n])


@njit(nogil=True, cache=CACHE)
def _pooled_outputs(M, b, OH, OW, size, stride, relu, y, where):
    """y (n, F, PH, PW) = max-pooling (ReLU'd if ``relu``) of the OH x OW convolution output
    given by ``_outputs``'s M and b, and where (n, F, PH, PW): see ``_pool_channels_last``."""
    F = y.shape[1]
    tile_windows = size == 2 and stride == 2  # the windows are the tiles: no output plane needed
    z_last = np.empty((0 if tile_windows else OH, OW, F), M.dtype)
    for n in range(y.shape[0]):
        start = n * ((OH + 1) // 2) * ((OW + 1) // 2)
        if tile_windows:
            _tile_windows(M, start, b, OW, relu, y[n], where[n])
        else:
            _tile_output(M, start, b, z_last)
            _pool_channels_last(z_last, size, stride, relu, y[n], where[n])


@njit(nogil=True, cache=CACHE)
def _output_gradients(dy, dM, db):
    """dM (16, >= n TH TW, F) from dy (n, F, OH, OW), and dy's sums added to db (F,): the
    transpose of ``_outputs``."""
    N, F, OH, OW = dy.shape
    dz_last = np.empty((OH, OW, F), dy.dtype)
    for n in range(N):
        for f in range(F):
            s = dy.dtype.type(0)
            for h in range(OH):
                for w in range(OW):
                    v = dy[n, f, h, w]
                    dz_last[h, w, f] = v
                    s += v
            db[f] += s
        _tile_output_adjoint(dz_last, n * ((OH + 1) // 2) * ((OW + 1) // 2), dM)


@njit(nogil=True, cache=CACHE)
def _pooled_output_gradients(dy, where, OH, OW, dM, db):
    """dM (16, >= n TH TW, F) from the pooled gradient dy (n, F, PH, PW) and the forward's where,
    and dy's sums added to db (F,): the transpose of ``_pooled_outputs``."""
    N, F = dy.shape[0], dy.shape[1]
    P = dy.shape[2] * dy.shape[3]
    dz_last = np.empty(OH * OW * F, dy.dtype)  # (OH, OW, F), flat
    for n in range(N):
        g, at = dy[n].reshape(F, P), where[n].reshape(F, P)
        dz_last[:] = 0
        for f in range(F):
            s = dy.dtype.type(0)
            for p in range(P):
                if at[f, p] >= 0:
                    dz_last[at[f, p] * F + f] += g[f, p]
                    s += g[f, p]
            db[f] += s
        _tile_output_adjoint(dz_last.reshape(OH, OW, F), n * ((OH + 1) // 2) * ((OW + 1) // 2), dM)


# Each thread runs every stage, transforms and products, over slices of its part of the batch
# whose V (16, tiles, C) and M (16, tiles, F) take at most this many bytes each (or one image's,
# if more), so that a slice stays in the core's L2 cache from one stage to the next (lenet's
# second layer: 5 images). That layer at batch 64, forward and backward with the caches flushed
# between calls: 9.2-10.0 ms, against 11.8-13.9 ms when each stage ran on the whole batch (16 MiB
# slices) in turn, the transforms on Numba's threads and the products on OpenBLAS's. lenet epochs
# at batch 64 with 0.5, 1, 2 and 4 MiB: 4,400-4,700, 4,600-5,100, 4,500-4,750 and 4,570-4,860
# images/s.
BATCH_SLICE_BYTES = 1 << 20


class _Plan:
    """Shapes of one convolution: tiles per image, images per slice, padded buffer rows."""

    def __init__(self, x_shape, w, pad):
        self.N, self.C, self.H, self.W = x_shape
        self.F = w.shape[0]
        self.pad = pad
        self.OH, self.OW = self.H + 2 * pad - 2, self.W + 2 * pad - 2
        self.TH, self.TW = (self.OH + 1) // 2, (self.OW + 1) // 2
        self.tiles = self.TH * self.TW
        self.images = max(1, BATCH_SLICE_BYTES // (16 * self.tiles * max(self.C, self.F) * w.itemsize))

    def slices(self, n0, n1):
        """(first image, end image, tiles) of every slice of images n0 .. n1 - 1."""
        for s0 in range(n0, n1, self.images):
            s1 = min(n1, s0 + self.images)
            yield s0, s1, (s1 - s0) * self.tiles

    def buffer(self, K, dtype, scratch=None, images=None):
        """An empty (16, R, K) array for ``images`` images (a slice's worth if None): a new one, or
        with ``scratch`` (a name) this thread's scratch array of that name, reused from call to
        call (see ``_SCRATCH``). R is odd: see the module docstring."""
        shape = (16, ((images or self.images) * self.tiles) | 1, K)
        if scratch is None:
            return np.empty(shape, dtype)
        size = shape[0] * shape[1] * shape[2]
        flat = getattr(_SCRATCH, scratch, None)
        if flat is None or flat.dtype != dtype or flat.size < size:
            flat = np.empty(size, dtype)
            setattr(_SCRATCH, scratch, flat)
        return flat[:size].reshape(shape)


# Per-thread scratch arrays for the arrays that never leave a call (one slice's M, dM, dV, and V
# when the forward keeps nothing), kept from call to call. Allocated anew on every call, such
# arrays made glibc map fresh pages for each training step until its allocator's thresholds
# happened to adapt: `fastnn train`'s first LeNet epoch took 1.5 million page faults and 20 s
# instead of 500 and 13 s.
_SCRATCH = threading.local()

_workers = None  # a ThreadPoolExecutor of _worker_count threads, made on first use; see _in_parts
_worker_count = 0
_blas = None  # threadpoolctl's handle on the BLAS libraries NumPy uses, made on first use
_one_call = threading.Lock()  # held by the call whose parts run: see _in_parts


def _forget_workers():
    """In a forked child: none of the parent's threads exist there, nor the holder of the lock."""
    global _workers, _worker_count, _one_call
    _workers, _worker_count, _one_call = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_workers)


def _in_parts(work, N, parts):
    """work(n0, n1) for ``parts`` parts n0 .. n1 - 1 of range(N), at once: the first on
    this thread, the others on worker threads (they run while the GIL is released, in the Numba
    kernels above, which are ``nogil``, and in NumPy's products), with OpenBLAS held to one
    thread. Returns the list of results, in the order of the parts.

    Without that hold, OpenBLAS splits each product of more than 2^19 multiply-adds among its own
    threads, and two threads asking for that at once ran lenet's epochs 4x slower (2 MiB slices:
    1,200 against 4,600 images/s). The hold is one setting for the whole process, so calls from
    several threads of a program take turns (each uses every core already): two holds that
    overlapped could end in the wrong order and leave OpenBLAS on one thread. (A child process
    forked during a call keeps the one-thread setting.)"""
    bounds = [(k * N // parts, (k + 1) * N // parts) for k in range(parts)]
    if parts == 1:
        return [work(0, N)]
    global _workers, _worker_count, _blas
    with _one_call:
        if _worker_count < parts - 1:
            if _workers is not None:
                _workers.shutdown(wait=False)
            _workers = ThreadPoolExecutor(parts - 1, thread_name_prefix="fastnn-winograd")
            _worker_count = parts - 1
        if _blas is None:
            _blas = ThreadpoolController().select(user_api="blas")
        with _blas.limit(limits=1):
            others = []
            try:
                for n0, n1 in bounds[1:]:
                    others.append(_submit(work, n0, n1))
                first = work(*bounds[0])
            finally:
                wait(others)  # the others write into the caller's arrays: never leave before they end
    return [first] + [future.result() for future in others]


def _submit(work, n0, n1):
    """A future of work(n0, n1) on a worker thread, or, once the interpreter is exiting (when
    executors take no new work: a convolution in an ``atexit`` handler), done on this thread."""
    try:
        return _workers.submit(work, n0, n1)
    except RuntimeError:
        done = Future()
        done.set_result(work(n0, n1))
        return done


def _forward(x, w, b, pad, pooling, keep):
    """The convolution, then ``_outputs`` (pooling None) or ``_pooled_outputs`` with pooling
    (size, stride, relu, PH, PW), slice by slice. Returns y, where (or None) and the state for
    ``_backward``, which holds the batch's V if ``keep`` (without, each thread reuses one slice's)
    and the number of parts the batch was cut into (one per thread; the backward cuts it alike)."""
    plan = _Plan(x.shape, w, pad)
    U = _filter_transform(w, _G.astype(w.dtype))
    if pooling is None:
        y, where = np.empty((plan.N, plan.F, plan.OH, plan.OW), x.dtype), None
    else:
        size, stride, relu, PH, PW = pooling
        y, where = np.empty((plan.N, plan.F, PH, PW), x.dtype), np.empty((plan.N, plan.F, PH, PW), np.int32)
    kept = plan.buffer(plan.C, x.dtype, images=plan.N) if keep else None

    def work(n0, n1):
        M = plan.buffer(plan.F, x.dtype, scratch="M")
        V = None if keep else plan.buffer(plan.C, x.dtype, scratch="V")
        for s0, s1, T in plan.slices(n0, n1):
            if keep:
                V = kept[:, s0 * plan.tiles:s1 * plan.tiles]
            _transform_patches(x[s0:s1], pad, V)
            np.matmul(V[:, :T], U, out=M[:, :T])
            if pooling is None:
                _outputs(M, b, y[s0:s1])
            else:
                _pooled_outputs(M, b, plan.OH, plan.OW, size, stride, relu, y[s0:s1], where[s0:s1])

    parts = batch_chunks(plan.N)
    _in_parts(work, plan.N, parts)
    return y, where, (plan, kept, U, parts)


def _backward(dy, where, state, input_grad):
    """dx (None without ``input_grad``), dw, db from dy, slice by slice: the transpose of ``_forward``."""
    plan, kept, U, parts = state
    dx = np.empty((plan.N, plan.C, plan.H, plan.W), dy.dtype) if input_grad else None
    # U[k]^T as contiguous (F, C) matrices: OpenBLAS took 190 us for a slice's dV (lenet) with
    # the transposed view, 140 with this copy.
    U_T = np.ascontiguousarray(U.transpose(0, 2, 1)) if input_grad else None

    def work(n0, n1):
        """This part's dU (16, F, C) and db (F,)."""
        dM = plan.buffer(plan.F, dy.dtype, scratch="dM")
        dV = plan.buffer(plan.C, dy.dtype, scratch="dV") if input_grad else None
        dU, dU_slice = np.zeros((16, plan.F, plan.C), dy.dtype), np.empty((16, plan.F, plan.C), dy.dtype)
        db = np.zeros(plan.F, dy.dtype)
        for s0, s1, T in plan.slices(n0, n1):
            if where is None:
                _output_gradients(dy[s0:s1], dM, db)
            else:
                _pooled_output_gradients(dy[s0:s1], where[s0:s1], plan.OH, plan.OW, dM, db)
            # dU[k]^T = dM[k]^T V[k]: this order is the faster BLAS call.
            dU += np.matmul(dM[:, :T].transpose(0, 2, 1), kept[:, s0 * plan.tiles:s1 * plan.tiles], out=dU_slice)
            if input_grad:
                np.matmul(dM[:, :T], U_T, out=dV[:, :T])
                _patches_adjoint(dV, plan.pad, dx[s0:s1])
        return dU, db

    results = _in_parts(work, plan.N, parts)
    dU, db = results[0]
    for part_dU, part_db in results[1:]:
        dU += part_dU
        db += part_db
    return dx, _filter_transform_adjoint(dU, _G.astype(dU.dtype)), db


def conv2d_forward(x, w, b, pad):
    """y (N, F, OH, OW) and the state for ``conv2d_backward``. x (N, C, H, W), w (F, C, 3, 3),
    b (F,): contiguous, checked and ``suits``."""
    y, _, state = _forward(x, w, b, int(pad), None, True)
    return y, state


def conv2d_backward(dy, state, input_grad=True):
    """dy (N, F, OH, OW) -> dx (N, C, H, W) (None if not ``input_grad``), dw (F, C, 3, 3), db (F,)."""
    plan = state[0]
    expected = (plan.N, plan.F, plan.OH, plan.OW)
    if dy.shape != expected:
        raise ValueError(f"dy must have shape {expected}, got {dy.shape}")
    dy = np.ascontiguousarray(dy, dtype=state[2].dtype)
    return _backward(dy, None, state, bool(input_grad))


def conv2d_maxpool2d_forward(x, w, b, pad, size, stride, relu, PH, PW, keep):
    """y (N, F, PH, PW) = max-pooling of (ReLU'd if ``relu``) conv2d(x), and the state for
    ``conv2d_maxpool2d_backward`` (None without ``keep``). Arguments contiguous, checked and
    ``suits``."""
    pooling = (int(size), int(stride), bool(relu), PH, PW)
    y, where, state = _forward(x, w, b, int(pad), pooling, keep)
    return y, ((where, state) if keep else None)


def conv2d_maxpool2d_backward(dy, state, input_grad=True):
    """dy (N, F, PH, PW) -> dx (N, C, H, W) (None if not ``input_grad``), dw (F, C, 3, 3), db (F,)."""
    if state is None:
        raise ValueError("conv2d_maxpool2d_backward: the forward pass ran with need_backward=False")
    where, conv_state = state
    if dy.shape != where.shape:
        raise ValueError(f"dy must have shape {where.shape}, got {dy.shape}")
    dy = np.ascontiguousarray(dy, dtype=conv_state[2].dtype)
    return _backward(dy, where, conv_state, bool(input_grad))
