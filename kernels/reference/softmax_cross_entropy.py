"""Softmax followed by cross-entropy, averaged over the batch, computed row by row."""
import numpy as np

from .._common import check_softmax_cross_entropy


def softmax_cross_entropy_forward(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels.

    logits (N, K) float, labels (N,) integers in [0, K)  ->  loss (0-d array, logits' dtype), cache
    log_softmax(z) = z - max(z) - log(sum(exp(z - max(z))))   (exp never overflows, log never sees 0)
    loss = mean over n of -log_softmax(logits[n])[labels[n]]
    """
    check_softmax_cross_entropy(logits, labels)
    N, K = logits.shape
    log_probs = np.empty((N, K), dtype=logits.dtype)
    total = logits.dtype.type(0)
    for n in range(N):
        shifted = logits[n] - logits[n].max()  # largest entry is 0
        log_probs[n] = shifted - np.log(np.sum(np.exp(shifted)))
        total -= log_probs[n, labels[n]]
    loss = np.asarray(total / N, dtype=logits.dtype)
    return loss, (log_probs, labels.copy())


def softmax_cross_entropy_backward(dloss, cache):
    """Gradient of the mean loss.

    dloss (0-d array or float)  ->  dlogits (N, K) = dloss * (softmax(logits) - onehot(labels)) / N
    """
    log_probs, labels = cache
    N = log_probs.shape[0]
    scale = float(dloss) / N
    dlogits = np.empty_like(log_probs)
    for n in range(N):
        grad = np.exp(log_probs[n])  # softmax of row n
        grad[labels[n]] -= 1
        dlogits[n] = grad * scale
    return dlogits
