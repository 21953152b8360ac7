"""The reference backend: plain loops over output positions, written to be read.

This is the specification every faster backend is tested against. Slow is fine; wrong is not.
"""
from .batchnorm import batchnorm_backward, batchnorm_forward
from .conv2d import conv2d_backward, conv2d_forward
from .dropout import dropout_backward, dropout_forward, dropout_mask
from .fused import (conv2d_maxpool2d_backward, conv2d_maxpool2d_forward, linear_relu_backward,
                    linear_relu_forward)
from .linear import linear_backward, linear_forward
from .maxpool2d import maxpool2d_backward, maxpool2d_forward
from .optim import adam_update, sgd_update
from .relu import relu_backward, relu_forward
from .softmax_cross_entropy import softmax_cross_entropy_backward, softmax_cross_entropy_forward

__all__ = [
    "linear_forward", "linear_backward",
    "conv2d_forward", "conv2d_backward",
    "maxpool2d_forward", "maxpool2d_backward",
    "relu_forward", "relu_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "batchnorm_forward", "batchnorm_backward",
    "dropout_forward", "dropout_backward", "dropout_mask",
    "conv2d_maxpool2d_forward", "conv2d_maxpool2d_backward",
    "linear_relu_forward", "linear_relu_backward",
    "sgd_update", "adam_update",
]
