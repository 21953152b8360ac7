"""Batch normalisation of (N, C) inputs in Numba; (N, C, H, W) is handed to ``vectorized``.

NumPy's version makes seven passes over x forward (mean, centre, square, mean, scale, scale,
shift) and six backward, each with a temporary. Here the forward pass is three passes (sum,
sum of squared deviations, then x_hat and y written together) and the backward two (the two
sums, then dx). The loops run over the batch outside and the C channels inside, so each pass
is one long vectorised loop over contiguous rows. The per-channel sums are accumulated in
float64, for float32 inputs too, then rounded to x's dtype, as every other result is.

Batch-norm layers after a convolution, (N, C, H, W), are served by the ``vectorized`` backend:
no model in the zoo has one, and its channel-major loops would be another kernel.
"""
import numpy as np
from numba import njit

from .. import _common
from ..vectorized import batchnorm as vectorized_batchnorm
from ._config import CACHE, FASTMATH


@njit(cache=CACHE, fastmath=FASTMATH)
def _moments(x):
    """x (N, C) -> per-channel mean and biased variance, both (C,) float64."""
    N, C = x.shape
    mean = np.zeros(C)
    for n in range(N):
        for c in range(C):
            mean[c] += x[n, c]
    mean /= N
    var = np.zeros(C)
    for n in range(N):
        for c in range(C):
            d = x[n, c] - mean[c]
            var[c] += d * d
    var /= N
    return mean, var


@njit(cache=CACHE, fastmath=FASTMATH)
def _normalise(x, mean, inv_std, gamma, beta, x_hat, y):
    """x_hat = (x - mean) * inv_std and y = x_hat * gamma + beta; x, x_hat, y (N, C), the rest (C,)."""
    N, C = x.shape
    for n in range(N):
        for c in range(C):
            h = (x[n, c] - mean[c]) * inv_std[c]
            x_hat[n, c] = h
            y[n, c] = h * gamma[c] + beta[c]


@njit(cache=CACHE, fastmath=FASTMATH)
def _gradient_sums(dy, x_hat):
    """dy, x_hat (N, C) -> sum of dy and sum of dy * x_hat over the batch, both (C,) float64."""
    N, C = dy.shape
    dbeta = np.zeros(C)
    dgamma = np.zeros(C)
    for n in range(N):
        for c in range(C):
            g = dy[n, c]
            dbeta[c] += g
            dgamma[c] += g * x_hat[n, c]
    return dbeta, dgamma


@njit(cache=CACHE, fastmath=FASTMATH)
def _input_gradient(dy, x_hat, mean_dy, mean_dy_x_hat, scale, training, dx):
    """dx = scale * (dy - mean_dy - x_hat * mean_dy_x_hat) in training, scale * dy in evaluation;
    dy, x_hat, dx (N, C), the rest (C,)."""
    N, C = dy.shape
    for n in range(N):
        for c in range(C):
            if training:
                dx[n, c] = scale[c] * (dy[n, c] - mean_dy[c] - x_hat[n, c] * mean_dy_x_hat[c])
            else:
                dx[n, c] = scale[c] * dy[n, c]


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5, training=True):
    """x (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var (C,).

    Returns y (x.shape), cache, new_running_mean (C,), new_running_var (C,).
    """
    _common.check_batchnorm(x, gamma, beta, running_mean, running_var, training)
    if x.ndim != 2:
        y, cache, new_mean, new_var = vectorized_batchnorm.batchnorm_forward(
            x, gamma, beta, running_mean, running_var, momentum, eps, training)
        return y, (vectorized_batchnorm, cache), new_mean, new_var
    dtype = x.dtype
    x = np.ascontiguousarray(x)
    if training:
        mean, var = _moments(x)
        mean, var = mean.astype(dtype), var.astype(dtype)
        new_running_mean, new_running_var = _common.running_statistics(
            running_mean, running_var, mean, var, x.shape[0], momentum)
    else:
        mean, var = running_mean.astype(dtype), running_var.astype(dtype)
        new_running_mean, new_running_var = running_mean.copy(), running_var.copy()
    inv_std = 1 / np.sqrt(var + dtype.type(eps))
    x_hat, y = np.empty_like(x), np.empty_like(x)
    _normalise(x, mean, inv_std, np.ascontiguousarray(gamma), np.ascontiguousarray(beta, dtype), x_hat, y)
    return y, (None, (x_hat, gamma, inv_std, training)), new_running_mean, new_running_var


def batchnorm_backward(dy, cache):
    """dy (x.shape) -> dx (x.shape), dgamma (C,), dbeta (C,)."""
    served_by, cache = cache
    if served_by is not None:
        return served_by.batchnorm_backward(dy, cache)
    x_hat, gamma, inv_std, training = cache
    dtype = x_hat.dtype
    dy = np.ascontiguousarray(dy, dtype)
    dbeta, dgamma = _gradient_sums(dy, x_hat)
    scale = gamma * inv_std
    count = x_hat.shape[0]
    mean_dy, mean_dy_x_hat = (dbeta / count).astype(dtype), (dgamma / count).astype(dtype)
    dx = np.empty_like(x_hat)
    _input_gradient(dy, x_hat, mean_dy, mean_dy_x_hat, scale, training, dx)
    return dx, dgamma.astype(dtype), dbeta.astype(dtype)
