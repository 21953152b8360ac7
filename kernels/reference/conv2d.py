"""2-D convolution (cross-correlation, as in PyTorch) with stride and zero padding.

One output position at a time: y[n, f, i, j] is the sum of the filter w[f] times the window of
the zero-padded input whose top-left corner is (i * stride, j * stride).
"""
import numpy as np

from .._common import check_conv2d


def _zero_pad(x, pad):
    """x (N, C, H, W) -> (N, C, H + 2*pad, W + 2*pad) with zeros around every image."""
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def conv2d_forward(x, w, b, stride=1, pad=0):
    """Convolve every image with every filter.

    x (N, C, H, W), w (F, C, KH, KW), b (F,)  ->  y (N, F, OH, OW), cache
    OH = (H + 2*pad - KH) // stride + 1, OW = (W + 2*pad - KW) // stride + 1
    y[n, f, i, j] = sum over c, p, q of xpad[n, c, i*stride + p, j*stride + q] * w[f, c, p, q]  +  b[f]
    """
    OH, OW = check_conv2d(x, w, b, stride, pad)
    stride, pad = int(stride), int(pad)
    N = x.shape[0]
    F, _, KH, KW = w.shape
    xpad = _zero_pad(x, pad)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    top, left = i * stride, j * stride
                    window = xpad[n, :, top:top + KH, left:left + KW]  # (C, KH, KW)
                    y[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return y, (x, w, stride, pad)


def conv2d_backward(dy, cache, input_grad=True):
    """Gradients of conv2d_forward.

    dy (N, F, OH, OW)  ->  dx (N, C, H, W), dw (F, C, KH, KW), db (F,)
    Each output y[n, f, i, j] sends dy[n, f, i, j] * w[f] back to its window of the padded input,
    dy[n, f, i, j] * window to dw[f], and dy[n, f, i, j] to db[f]; padding gradients are dropped.
    ``input_grad=False``: dx is not computed and is None (the input is data).
    """
    x, w, stride, pad = cache
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = dy.shape[2:]
    xpad = _zero_pad(x, pad)
    dxpad = np.zeros(xpad.shape, dtype=x.dtype)
    dw = np.zeros(w.shape, dtype=x.dtype)
    db = np.zeros(F, dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    top, left = i * stride, j * stride
                    g = dy[n, f, i, j]
                    if input_grad:
                        dxpad[n, :, top:top + KH, left:left + KW] += g * w[f]
                    dw[f] += g * xpad[n, :, top:top + KH, left:left + KW]
                    db[f] += g
    dx = dxpad[:, :, pad:pad + H, pad:pad + W].copy() if input_grad else None
    return dx, dw, db
