"""Max pooling over square windows, by strided views of the input (one per window offset).

Each window offset (di, dj) gives a view (N, C, OH, OW) of the input holding that element of
every window (when the windows tile the input these are the views of the reshape
(N, C, OH, size, OW, size)). The forward pass copies each view once -- element-wise operations
run several times faster on contiguous arrays than on strided views -- and keeps, per window,
the running maximum and the offset of its first maximum in row-major order (PyTorch's
convention): a later offset takes over only when strictly greater, so ties keep the first.
The backward pass sends each window's gradient to that offset alone.
"""
import numpy as np

from .. import _common


def _window_views(a, size, stride, OH, OW):
    """Views (N, C, OH, OW) of a (N, C, H, W), one per window offset (di, dj), row-major order."""
    return [a[:, :, di:di + stride * OH:stride, dj:dj + stride * OW:stride]
            for di in range(size) for dj in range(size)]


def maxpool2d_forward(x, size=2, stride=None):
    """x (N, C, H, W) -> y (N, C, OH, OW), cache; stride None means stride = size."""
    stride, OH, OW = _common.check_maxpool2d(x, size, stride)
    views = _window_views(x, size, stride, OH, OW)
    y = views[0].copy()
    offset_type = np.min_scalar_type(len(views) - 1)
    winner = np.zeros(y.shape, dtype=offset_type)  # offset di*size + dj of each window's first maximum
    for offset, view in enumerate(views[1:], start=1):
        candidate = view.copy()
        # offsets only grow, so max(winner, offset where strictly greater) is the new winner
        np.maximum(winner, (candidate > y) * offset_type.type(offset), out=winner)
        np.maximum(y, candidate, out=y)
    return y, (x.shape, x.dtype, size, stride, winner)


def maxpool2d_backward(dy, cache):
    """dy (N, C, OH, OW) -> dx (N, C, H, W); overlapping windows add their contributions."""
    x_shape, dtype, size, stride, winner = cache
    OH, OW = dy.shape[2:]
    tiles = stride == size and OH * size == x_shape[2] and OW * size == x_shape[3]
    dx = np.empty(x_shape, dtype=dtype) if tiles else np.zeros(x_shape, dtype=dtype)
    for offset, dx_view in enumerate(_window_views(dx, size, stride, OH, OW)):
        if stride >= size:  # windows do not overlap: each input element has at most one window
            np.multiply(dy, winner == offset, out=dx_view)
        else:
            dx_view += dy * (winner == offset)
    return dx
