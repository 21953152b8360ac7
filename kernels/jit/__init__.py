"""The ``jit`` backend: Numba kernels for every op. Some hand shapes where NumPy wins to the
``vectorized`` backend inside the op: linear layers wider than 16 outputs (BLAS), strides other
than 1 in convolutions (im2col + BLAS), batch normalisation of (N, C, H, W) inputs. 3 x 3
convolutions with many input channels on small planes use Winograd's method (``winograd.py``).

Nothing compiles at import. Each kernel compiles at its first call for the dtype it is given
(float32 and float64 are separate compilations) and is cached on disk (``_config.CACHE``; the
directory follows ``NUMBA_CACHE_DIR``), so later processes load it instead of compiling.
``warm_up`` compiles or loads every kernel for one dtype ahead of time.

Threads: the parallel kernels run on Numba's OpenMP pool; how its idle threads wait is set
with fastnn's other thread defaults (see ``fastnn``'s docstring).
"""
import numpy as np

from . import linear, winograd
from .batchnorm import batchnorm_backward, batchnorm_forward
from .conv2d import conv2d_backward, conv2d_forward
from .dropout import dropout_backward, dropout_forward, dropout_mask
from .fused import conv2d_maxpool2d_backward, conv2d_maxpool2d_forward
from .linear import linear_backward, linear_forward, linear_relu_backward, linear_relu_forward
from .maxpool2d import maxpool2d_backward, maxpool2d_forward
from .optim import adam_update, sgd_update
from .relu import relu_backward, relu_forward
from .softmax_cross_entropy import softmax_cross_entropy_backward, softmax_cross_entropy_forward


def warm_up(dtype=np.float32):
    """Compile (or load from the disk cache) every jit kernel for ``dtype`` on tiny inputs."""
    dtype = np.dtype(dtype)
    x, w, b = np.ones((1, 1, 4, 4), dtype), np.ones((1, 1, 3, 3), dtype), np.zeros(1, dtype)
    y, cache = conv2d_forward(x, w, b, stride=1, pad=1)
    conv2d_backward(y, cache)
    y, cache = conv2d_maxpool2d_forward(x, w, b, stride=1, pad=1, size=2, relu=True)  # phases.py (one channel)
    conv2d_maxpool2d_backward(y, cache)
    x, w = np.ones((1, 2, 4, 4), dtype), np.ones((1, 2, 3, 3), dtype)  # the direct fused path (fused.py)
    y, cache = conv2d_maxpool2d_forward(x, w, b, stride=1, pad=1, size=2, relu=True)
    conv2d_maxpool2d_backward(y, cache)
    # The same two ops with enough channels for Winograd's method (winograd.py).
    x, w = np.ones((1, winograd.MIN_CHANNELS, 4, 4), dtype), np.ones((1, winograd.MIN_CHANNELS, 3, 3), dtype)
    y, cache = conv2d_forward(x, w, b, stride=1, pad=1)
    conv2d_backward(y, cache)
    y, cache = conv2d_maxpool2d_forward(x, w, b, stride=1, pad=1, size=2, relu=True)
    conv2d_maxpool2d_backward(y, cache)
    conv2d_maxpool2d_forward(x, w, b, stride=1, pad=1, size=2, relu=True, need_backward=False)  # V in scratch
    y, cache = maxpool2d_forward(x, 2)
    maxpool2d_backward(y, cache)
    loss, cache = softmax_cross_entropy_forward(np.zeros((1, 2), dtype), np.zeros(1, np.int64))
    softmax_cross_entropy_backward(loss, cache)
    x = np.ones((2, 3), dtype)
    y, cache = linear_forward(x, x.T, x[0, :2])
    linear_backward(y, cache)
    wide = np.ones((2, linear.PARALLEL_D), dtype)  # a head wide enough to split over the threads
    y, cache = linear_forward(wide, wide.T, x[0, :2])
    linear_backward(y, cache)
    y, cache = linear_relu_forward(x, x.T, x[0, :2])
    linear_relu_backward(y, cache)
    y, cache = relu_forward(x)
    relu_backward(y, cache)
    y, cache = dropout_forward(x, dropout_mask(x.shape, 0.5, 0), 0.5)
    dropout_backward(y, cache)
    y, cache, _, _ = batchnorm_forward(x, x[0], x[0], x[0], x[0])
    batchnorm_backward(y, cache)
    w = np.zeros(2, dtype)
    sgd_update(w, np.ones(2, dtype), np.zeros(2, dtype), 0.1, momentum=0.9)
    adam_update(w, np.ones(2, dtype), np.zeros(2, dtype), np.zeros(2, dtype), 1, 0.1)
