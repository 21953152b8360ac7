"""Softmax followed by the mean cross-entropy, computed through log-softmax."""
import numpy as np

from .. import _common


def softmax_cross_entropy_forward(logits, labels):
    """logits (N, K), labels (N,) ints in [0, K) -> loss (0-d, batch mean), cache.

    log p = z - max(z) - log(sum(exp(z - max(z)))): no overflow in exp, no log of 0.
    """
    _common.check_softmax_cross_entropy(logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(logits.shape[0])
    loss = -log_probs[rows, labels].mean()
    return np.asarray(loss, dtype=logits.dtype), (log_probs, labels)


def softmax_cross_entropy_backward(dloss, cache):
    """dloss (0-d or float) -> dlogits (N, K) = dloss * (softmax - one_hot(labels)) / N."""
    log_probs, labels = cache
    N = log_probs.shape[0]
    dlogits = np.exp(log_probs)
    dlogits[np.arange(N), labels] -= 1
    dlogits *= log_probs.dtype.type(float(dloss) / N)
    return dlogits
