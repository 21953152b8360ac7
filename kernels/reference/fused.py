"""Fused ops, specified as the plain composition of the reference ops they fuse.

conv2d_maxpool2d: a convolution, optionally a ReLU, then max-pooling -- one call for the
``Conv2d, [ReLU], MaxPool2d`` run of a CNN, so that faster backends can compute it in one pass.
linear_relu: a linear layer, then a ReLU -- one call for the ``Linear, ReLU`` of an MLP's hidden
layer, so that faster backends can add the bias and apply the ReLU in one pass.
"""
from .conv2d import conv2d_backward, conv2d_forward
from .linear import linear_backward, linear_forward
from .maxpool2d import maxpool2d_backward, maxpool2d_forward
from .relu import relu_backward, relu_forward


def conv2d_maxpool2d_forward(x, w, b, stride=1, pad=0, size=2, pool_stride=None, relu=False,
                             need_backward=True):
    """maxpool2d(relu(conv2d(x)) if relu else conv2d(x), size, pool_stride).

    x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, PH, PW), cache, where (OH, OW) is the
    convolution's output size and PH = (OH - size) // pool_stride + 1 (likewise PW).
    ``need_backward=False`` allows a backend to keep nothing for backward (inference); this one
    keeps its cache all the same.
    """
    z, conv_cache = conv2d_forward(x, w, b, stride, pad)
    relu_cache = None
    if relu:
        z, relu_cache = relu_forward(z)
    y, pool_cache = maxpool2d_forward(z, size, pool_stride)
    return y, (conv_cache, relu_cache, pool_cache)


def conv2d_maxpool2d_backward(dy, cache, input_grad=True):
    """dy (N, F, PH, PW) -> dx (N, C, H, W), dw (F, C, KH, KW), db (F,); dx is None when
    ``input_grad`` is False (the caller does not need it)."""
    conv_cache, relu_cache, pool_cache = cache
    dz = maxpool2d_backward(dy, pool_cache)
    if relu_cache is not None:
        dz = relu_backward(dz, relu_cache)
    return conv2d_backward(dz, conv_cache, input_grad)


def linear_relu_forward(x, w, b):
    """relu(linear(x, w, b)): x (N, D), w (D, F), b (F,) -> y (N, F), cache."""
    z, linear_cache = linear_forward(x, w, b)
    y, relu_cache = relu_forward(z)
    return y, (linear_cache, relu_cache)


def linear_relu_backward(dy, cache, input_grad=True):
    """dy (N, F) -> dx (N, D), dw (D, F), db (F,); dx is None when ``input_grad`` is False."""
    linear_cache, relu_cache = cache
    return linear_backward(relu_backward(dy, relu_cache), linear_cache, input_grad)
