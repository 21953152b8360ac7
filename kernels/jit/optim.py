"""Optimizer updates in Numba: each rule of ``reference/optim.py`` in one pass over memory.

NumPy runs an update as four to ten whole-array passes, with temporaries; here every element
of w and of the state is read once and written once. One thread: the updates are bound by
memory, and at these sizes a parallel loop's thread wake-ups cost more than they save (with
two threads, mlp's training epoch was 10% slower). The scalars (such as 1 - beta1) are
computed in float64 and cast to w's dtype, so a float32 parameter is updated in float32
arithmetic, operation for operation as in NumPy; state values below the smallest normal number
become zero, as in the reference (see there why). Arrays that are not C-contiguous (whose flat
view would be a copy) are updated by the reference rule instead.
"""
import math

import numpy as np
from numba import njit

from ..reference import optim as reference_optim
from ._config import CACHE


@njit(cache=CACHE)
def _sgd(w, grad, buf, lr, momentum, nesterov, weight_decay, first):
    cast = w.dtype.type  # the float64 scalars, rounded to w's dtype
    lr, momentum, weight_decay = cast(lr), cast(momentum), cast(weight_decay)
    zero, tiny = cast(0), cast(np.finfo(w.dtype).tiny)
    for i in range(w.size):
        g = grad[i] + weight_decay * w[i] if weight_decay != 0 else grad[i]
        if momentum != 0:
            b = g if first else momentum * buf[i] + g
            if abs(b) < tiny:
                b = zero
            buf[i] = b
            g = g + momentum * b if nesterov else b
        w[i] -= lr * g


@njit(cache=CACHE)
def _adam(w, grad, m, v, beta1, rest1, beta2, rest2, eps, weight_decay, decay, bias2, step_size):
    cast = w.dtype.type  # the float64 scalars, rounded to w's dtype
    beta1, rest1, beta2, rest2, eps = cast(beta1), cast(rest1), cast(beta2), cast(rest2), cast(eps)
    weight_decay, decay, bias2, step_size = cast(weight_decay), cast(decay), cast(bias2), cast(step_size)
    zero, tiny = cast(0), cast(np.finfo(w.dtype).tiny)
    for i in range(w.size):
        g = grad[i]
        if decay != 0:                      # AdamW: w * (1 - lr * weight_decay)
            w[i] *= decay
        elif weight_decay != 0:
            g = g + weight_decay * w[i]
        m_i = beta1 * m[i] + rest1 * g
        v_i = beta2 * v[i] + rest2 * (g * g)
        if abs(m_i) < tiny:
            m_i = zero
        if abs(v_i) < tiny:
            v_i = zero
        m[i], v[i] = m_i, v_i
        w[i] -= step_size * m_i / (np.sqrt(v_i) / bias2 + eps)


def sgd_update(w, grad, buf, lr, momentum=0.0, nesterov=False, weight_decay=0.0, first=False):
    """``reference.optim.sgd_update``, in one pass: w and buf (w's shape) updated in place.
    Without momentum, buf is never touched (and may be None)."""
    buf = w if buf is None else buf
    if not (w.flags.c_contiguous and buf.flags.c_contiguous):
        return reference_optim.sgd_update(w, grad, buf, lr, momentum, nesterov, weight_decay, first)
    _sgd(w.reshape(-1), np.ascontiguousarray(grad, w.dtype).reshape(-1), buf.reshape(-1), float(lr), float(momentum),
         bool(nesterov), float(weight_decay), bool(first))


def adam_update(w, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, decoupled_weight_decay=False):
    """``reference.optim.adam_update``, in one pass: w, exp_avg, exp_avg_sq updated in place."""
    if not (w.flags.c_contiguous and exp_avg.flags.c_contiguous and exp_avg_sq.flags.c_contiguous):
        return reference_optim.adam_update(w, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                                           weight_decay, decoupled_weight_decay)
    decay = 1 - lr * weight_decay if decoupled_weight_decay else 0.0
    _adam(w.reshape(-1), np.ascontiguousarray(grad, w.dtype).reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
          float(beta1), float(1 - beta1), float(beta2), float(1 - beta2), float(eps),
          float(0.0 if decoupled_weight_decay else weight_decay), float(decay),
          math.sqrt(1 - beta2 ** step), float(lr / (1 - beta1 ** step)))
