"""Batch normalisation over the batch (and spatial) axes, PyTorch's conventions.

Training normalises with the batch mean and biased variance and moves the running statistics
towards the batch ones: running = (1 - momentum) * running + momentum * batch, with the unbiased
variance for running_var. Evaluation normalises with the running statistics.
"""
import numpy as np

from .. import _common


def _channel_axes(x):
    """Axes reduced per channel: (0,) for (N, C), (0, 2, 3) for (N, C, H, W)."""
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _per_channel(v, x):
    """Reshape a (C,) vector to broadcast against x: (1, C) or (1, C, 1, 1)."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5, training=True):
    """x (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var (C,).

    Returns y (x.shape), cache, new_running_mean (C,), new_running_var (C,).
    """
    _common.check_batchnorm(x, gamma, beta, running_mean, running_var, training)
    axes = _channel_axes(x)
    if training:
        mean = x.mean(axis=axes)
        centred = x - _per_channel(mean, x)
        var = np.square(centred).mean(axis=axes)
        new_running_mean, new_running_var = _common.running_statistics(
            running_mean, running_var, mean, var, x.size // x.shape[1], momentum)
    else:
        mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        centred = x - _per_channel(mean, x)
        new_running_mean, new_running_var = running_mean.copy(), running_var.copy()
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    x_hat = centred * _per_channel(inv_std, x)
    y = x_hat * _per_channel(gamma, x) + _per_channel(beta, x)
    return y, (x_hat, gamma, inv_std, training), new_running_mean, new_running_var


def batchnorm_backward(dy, cache):
    """dy (x.shape) -> dx (x.shape), dgamma (C,), dbeta (C,)."""
    x_hat, gamma, inv_std, training = cache
    axes = _channel_axes(x_hat)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    scale = _per_channel(gamma * inv_std, x_hat)
    if not training:
        return dy * scale, dgamma, dbeta
    count = x_hat.size // x_hat.shape[1]
    dx = dy - _per_channel(dbeta / count, x_hat) - x_hat * _per_channel(dgamma / count, x_hat)
    dx *= scale
    return dx, dgamma, dbeta
