"""Batch normalisation of (N, C) or (N, C, H, W) inputs, one channel at a time (PyTorch conventions)."""
import numpy as np

from .._common import check_batchnorm


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5, training=True):
    """Normalise every channel, then scale and shift it.

    x (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var (C,)
      ->  y (x's shape), cache, new_running_mean (C,), new_running_var (C,)
    For channel c with its m = N (or N*H*W) values x_c:
      training: mean = mean(x_c), var = mean((x_c - mean)**2)   (biased, used to normalise)
                new_running_mean = (1 - momentum) * running_mean + momentum * mean
                new_running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)  (unbiased)
      eval:     mean, var = running_mean[c], running_var[c]; the running statistics come back unchanged
      y_c = gamma[c] * (x_c - mean) / sqrt(var + eps) + beta[c]
    The running statistics are returned as new arrays (of their own dtype), never updated in place.
    """
    check_batchnorm(x, gamma, beta, running_mean, running_var, training)
    C = x.shape[1]
    y = np.empty(x.shape, dtype=x.dtype)
    xhat = np.empty(x.shape, dtype=x.dtype)
    inv_std = np.empty(C, dtype=x.dtype)
    new_running_mean = running_mean.copy()
    new_running_var = running_var.copy()
    for c in range(C):
        values = x[:, c]  # every value of channel c: (N,) or (N, H, W)
        if training:
            mean = values.mean()
            var = ((values - mean) ** 2).mean()
            m = values.size
            new_running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean
            new_running_var[c] = (1 - momentum) * running_var[c] + momentum * var * m / (m - 1)
        else:
            mean, var = running_mean[c], running_var[c]
        inv_std[c] = 1 / np.sqrt(var + eps)
        xhat[:, c] = (values - mean) * inv_std[c]
        y[:, c] = gamma[c] * xhat[:, c] + beta[c]
    return y, (xhat, gamma, inv_std, training), new_running_mean, new_running_var


def batchnorm_backward(dy, cache):
    """Gradients of batchnorm_forward.

    dy (x's shape)  ->  dx (x's shape), dgamma (C,), dbeta (C,)
    dbeta[c] = sum(dy_c), dgamma[c] = sum(dy_c * xhat_c), and with s = 1 / sqrt(var + eps):
      training: dx_c = gamma[c] * s * (dy_c - mean(dy_c) - xhat_c * mean(dy_c * xhat_c))
                (the batch mean and variance depend on x as well)
      eval:     dx_c = gamma[c] * s * dy_c
    """
    xhat, gamma, inv_std, training = cache
    C = xhat.shape[1]
    dx = np.empty(xhat.shape, dtype=xhat.dtype)
    dgamma = np.empty(C, dtype=xhat.dtype)
    dbeta = np.empty(C, dtype=xhat.dtype)
    for c in range(C):
        g, xh = dy[:, c], xhat[:, c]
        dbeta[c] = g.sum()
        dgamma[c] = (g * xh).sum()
        if training:
            dx[:, c] = gamma[c] * inv_std[c] * (g - g.mean() - xh * (g * xh).mean())
        else:
            dx[:, c] = gamma[c] * inv_std[c] * g
    return dx, dgamma, dbeta
