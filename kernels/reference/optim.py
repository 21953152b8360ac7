"""Optimizer updates: PyTorch's SGD and Adam rules for one parameter.

Unlike the layer ops, these work in place, as an optimizer step must: the parameter ``w`` and
the optimizer's state arrays (same shape and dtype as ``w``) are updated; ``grad`` is only read.
Each rule is a handful of whole-array expressions, which read as plainly as a loop over the
elements would, so this specification is also what the ``vectorized`` backend runs.

One departure from PyTorch: a state value (momentum buffer, moment estimate) whose magnitude
falls below the dtype's smallest normal number is set to zero. A weight whose gradient stays
zero (a pixel that is always 0, a unit that never fires) has its state multiplied by 0.9 every
step, and after about 800 steps from 1e-3 that state is subnormal; x86 CPUs then take a
microcode assist of about 100 cycles for each operation on it (seen here: lenet's SGD step
went from 0.5 ms to 3.8 ms in its first epoch's last quarter). Such a value moves no weight
(lr * 1e-38 is below any float32 weight's last bit unless the weight is itself below ~1e-30).
"""
import math

import numpy as np


def flush_subnormals(state):
    """state[|state| < smallest normal number of its dtype] = 0, in place (see the module's note)."""
    state[np.abs(state) < np.finfo(state.dtype).tiny] = 0


def sgd_update(w, grad, buf, lr, momentum=0.0, nesterov=False, weight_decay=0.0, first=False):
    """One SGD step (dampening 0) for w (any shape); buf is the momentum buffer (w's shape; None
    without momentum), overwritten when ``first`` (the parameter's first step)::

        g = grad + weight_decay * w
        buf = g if first else momentum * buf + g                    (if momentum)
        buf = 0 where |buf| < the smallest normal number            (if momentum)
        g = g + momentum * buf if nesterov else buf                 (if momentum)
        w = w - lr * g
    """
    g = grad + weight_decay * w if weight_decay else grad
    if momentum:
        if first:
            np.copyto(buf, g)
        else:
            buf *= momentum
            buf += g
        flush_subnormals(buf)
        g = g + momentum * buf if nesterov else buf
    w -= lr * g


def adam_update(w, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, decoupled_weight_decay=False):
    """One Adam (or, with ``decoupled_weight_decay``, AdamW) step for w (any shape); exp_avg and
    exp_avg_sq (w's shape) are the moment estimates, ``step`` counts this step (1 for the first)::

        w = w * (1 - lr * weight_decay)                 (AdamW)   or   g = grad + weight_decay * w
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g**2
        m, v = 0 where |m|, |v| < the smallest normal number
        w = w - lr * (m / (1 - beta1**step)) / (sqrt(v / (1 - beta2**step)) + eps)
    """
    g = grad
    if decoupled_weight_decay:
        w *= 1 - lr * weight_decay
    elif weight_decay:
        g = grad + weight_decay * w
    exp_avg *= beta1
    exp_avg += (1 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * (g * g)
    flush_subnormals(exp_avg)
    flush_subnormals(exp_avg_sq)
    denominator = np.sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step) + eps
    w -= (lr / (1 - beta1 ** step)) * exp_avg / denominator
