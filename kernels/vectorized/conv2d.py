"""2-D convolution (cross-correlation, as in PyTorch) by im2col and BLAS products.

The column matrix has one row per weight element (c, i, j) and one column per output position
(n, oh, ow), so the forward pass is one GEMM, w (F, C*KH*KW) @ cols (C*KH*KW, n*OH*OW), and the
weight gradient another, dy (F, n*OH*OW) @ cols.T. The input is first laid out channel-major
(C, N, H, W) so that each im2col copy and each col2im addition runs over matching axes.

The column buffer holds at most COLUMN_BUFFER_BYTES: larger batches are processed in chunks of
samples, and the backward pass rebuilds the columns chunk by chunk instead of keeping them.
"""
import numpy as np

from .. import _common

COLUMN_BUFFER_BYTES = 64 * 2**20


def _channel_major_padded(x, pad):
    """x (n, C, H, W) -> (C, n, H + 2*pad, W + 2*pad), zero border; a view when pad == 0."""
    x_cn = x.transpose(1, 0, 2, 3)
    if pad == 0:
        return x_cn
    C, n, H, W = x_cn.shape
    padded = np.zeros((C, n, H + 2 * pad, W + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + H, pad:pad + W] = x_cn
    return padded


def _im2col(x, KH, KW, stride, pad, OH, OW):
    """x (n, C, H, W) -> cols (C*KH*KW, n*OH*OW): one strided-slice copy per kernel offset."""
    padded = _channel_major_padded(x, pad)
    C, n = padded.shape[:2]
    cols = np.empty((C, KH, KW, n, OH, OW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            cols[:, i, j] = padded[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
    return cols.reshape(C * KH * KW, n * OH * OW)


def _col2im(cols, x_shape, KH, KW, stride, pad, OH, OW, out):
    """cols (C*KH*KW, n*OH*OW) -> out (n, C, H, W): each offset's slice added back (+=)."""
    n, C, H, W = x_shape
    cols = cols.reshape(C, KH, KW, n, OH, OW)
    padded = np.zeros((C, n, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i in range(KH):
        for j in range(KW):
            padded[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += cols[:, i, j]
    out[...] = padded[:, :, pad:pad + H, pad:pad + W].transpose(1, 0, 2, 3)


def _batch_chunks(x, w, OH, OW):
    """Slices of the batch whose column matrix fits in COLUMN_BUFFER_BYTES (at least 1 sample)."""
    N = x.shape[0]
    column_bytes_per_sample = w[0].size * OH * OW * x.itemsize
    size = max(1, COLUMN_BUFFER_BYTES // column_bytes_per_sample)
    return [slice(start, min(start + size, N)) for start in range(0, N, size)]


def conv2d_forward(x, w, b, stride=1, pad=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW), cache."""
    OH, OW = _common.check_conv2d(x, w, b, stride, pad)
    stride, pad = int(stride), int(pad)
    N = x.shape[0]
    F, C, KH, KW = w.shape
    w_rows = w.reshape(F, C * KH * KW)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    chunks = _batch_chunks(x, w, OH, OW)
    for chunk in chunks:
        cols = _im2col(x[chunk], KH, KW, stride, pad, OH, OW)
        out = (w_rows @ cols).reshape(F, -1, OH, OW)
        np.add(out.transpose(1, 0, 2, 3), b[:, None, None], out=y[chunk])
    kept_cols = cols if len(chunks) == 1 else None
    return y, (x, w, stride, pad, kept_cols)


def conv2d_backward(dy, cache):
    """dy (N, F, OH, OW) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,)."""
    x, w, stride, pad, kept_cols = cache
    N, F, OH, OW = dy.shape
    _, C, KH, KW = w.shape
    w_rows = w.reshape(F, C * KH * KW)
    dy_rows = dy.transpose(1, 0, 2, 3).reshape(F, N * OH * OW)
    db = dy_rows.sum(axis=1)
    dw = np.zeros((F, C * KH * KW), dtype=w.dtype)
    dx = np.empty(x.shape, dtype=x.dtype)
    for chunk in _batch_chunks(x, w, OH, OW):
        cols = kept_cols if kept_cols is not None else _im2col(x[chunk], KH, KW, stride, pad, OH, OW)
        dy_chunk = dy_rows[:, chunk.start * OH * OW:chunk.stop * OH * OW]
        dw += dy_chunk @ cols.T
        _col2im(w_rows.T @ dy_chunk, x[chunk].shape, KH, KW, stride, pad, OH, OW, out=dx[chunk])
    return dx, dw.reshape(w.shape), db
