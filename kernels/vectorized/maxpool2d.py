"""Max pooling over square windows, by strided views of the input (one per window offset).

Each window offset (di, dj) gives a view (N, C, OH, OW) of the input holding that element of
every window; the forward pass is an element-wise maximum over these views. The backward pass
walks the offsets in row-major order and gives each window's gradient to the first offset that
holds its maximum (PyTorch's convention), so ties send the gradient to one place only.
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
    for view in views[1:]:
        np.maximum(y, view, out=y)
    return y, (x, y, size, stride)


def maxpool2d_backward(dy, cache):
    """dy (N, C, OH, OW) -> dx (N, C, H, W); overlapping windows add their contributions."""
    x, y, size, stride = cache
    OH, OW = y.shape[2:]
    dx = np.zeros(x.shape, dtype=x.dtype)
    remaining = dy  # gradient of each window not yet given to an earlier maximum
    for x_view, dx_view in zip(_window_views(x, size, stride, OH, OW), _window_views(dx, size, stride, OH, OW)):
        is_max = x_view == y
        dx_view += np.where(is_max, remaining, 0)
        remaining = np.where(is_max, 0, remaining)
    return dx
