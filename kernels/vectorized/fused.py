"""Fused ops as compositions of the vectorized ops, each in its cheapest order.

conv2d_maxpool2d pools before the ReLU: max-pooling and ReLU commute (max_k relu(z_k) =
relu(max_k z_k)), and the ReLU then runs on a quarter of the values (2 x 2 windows). The
gradients agree too: a window whose maximum is <= 0 gets no gradient either way, and otherwise
its first maximum is the same before and after the ReLU.

linear_relu keeps a boolean mask for its ReLU's backward pass, not the linear layer's output.
"""
import numpy as np

from .conv2d import conv2d_backward, conv2d_forward
from .linear import linear_backward, linear_forward
from .maxpool2d import maxpool2d_backward, maxpool2d_forward
from .relu import relu_backward, relu_forward


def conv2d_maxpool2d_forward(x, w, b, stride=1, pad=0, size=2, pool_stride=None, relu=False,
                             need_backward=True):
    """maxpool2d(relu(conv2d(x)) if relu else conv2d(x), size, pool_stride).

    x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, PH, PW), cache. ``need_backward`` is
    accepted for the contract (see ``reference/fused.py``); the cache is kept all the same.
    """
    z, conv_cache = conv2d_forward(x, w, b, stride, pad)
    y, pool_cache = maxpool2d_forward(z, size, pool_stride)
    relu_cache = None
    if relu:
        y, relu_cache = relu_forward(y)
    return y, (conv_cache, pool_cache, relu_cache)


def conv2d_maxpool2d_backward(dy, cache, input_grad=True):
    """dy (N, F, PH, PW) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,); dx is None when
    ``input_grad`` is False (the caller does not need it)."""
    conv_cache, pool_cache, relu_cache = cache
    if relu_cache is not None:
        dy = relu_backward(dy, relu_cache)
    return conv2d_backward(maxpool2d_backward(dy, pool_cache), conv_cache, input_grad)


def linear_relu_forward(x, w, b):
    """relu(linear(x, w, b)): x (N, D), w (D, F), b (F,) -> y (N, F), cache (the linear layer's,
    and the boolean mask of where the ReLU passes gradient: a quarter of the output's bytes)."""
    z, linear_cache = linear_forward(x, w, b)
    return np.maximum(z, 0), (linear_cache, z > 0)


def linear_relu_backward(dy, cache, input_grad=True):
    """dy (N, F) -> dx (N, D), dw (D, F), db (F,); dx is None when ``input_grad`` is False.
    As ``relu_backward``, a NaN or infinite dy where the ReLU is not live gives NaN, not 0."""
    (x, w), live = cache
    if dy.shape != live.shape:
        raise ValueError(f"dy must have shape {live.shape}, got {dy.shape}")
    return linear_backward(np.multiply(dy, live, dtype=x.dtype), (x, w), input_grad)
