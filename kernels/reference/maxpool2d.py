"""2-D max pooling over square windows, one output position at a time."""
import numpy as np

from .._common import check_maxpool2d


def maxpool2d_forward(x, size=2, stride=None):
    """Largest value of every size x size window.

    x (N, C, H, W)  ->  y (N, C, OH, OW), cache      (stride None means stride = size)
    OH = (H - size) // stride + 1, OW = (W - size) // stride + 1
    y[n, c, i, j] = max of x[n, c, i*stride : i*stride + size, j*stride : j*stride + size]
    """
    stride, OH, OW = check_maxpool2d(x, size, stride)
    size, stride = int(size), int(stride)
    N, C = x.shape[:2]
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    top, left = i * stride, j * stride
                    y[n, c, i, j] = x[n, c, top:top + size, left:left + size].max()
    return y, (x, size, stride)


def maxpool2d_backward(dy, cache):
    """Gradient of maxpool2d_forward.

    dy (N, C, OH, OW)  ->  dx (N, C, H, W)
    dy[n, c, i, j] goes to the window's FIRST maximum in row-major order (np.argmax's choice, as in
    PyTorch); windows that overlap (stride < size) add their contributions.
    """
    x, size, stride = cache
    N, C, OH, OW = dy.shape
    dx = np.zeros(x.shape, dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    top, left = i * stride, j * stride
                    window = x[n, c, top:top + size, left:left + size]
                    p, q = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, top + p, left + q] += dy[n, c, i, j]
    return dx
