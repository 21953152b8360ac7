"""Loss functions: ``loss = criterion(output, target)``; ``float(loss)``; ``loss.backward()`` -> d(output).

Usage: ``loss = criterion(model(x), y); model.backward(loss.backward()); optimizer.step()``.
"""
import numpy as np

from .backend import ops
from .kernels._common import check_float
from .nn import _check_backend


class Loss:
    """A computed loss value that knows its gradient with respect to the criterion's output."""

    def __init__(self, value, backward):
        self.value = float(value)
        self._backward = backward

    def backward(self):
        """d(loss)/d(output): an array of the output's shape and dtype."""
        return self._backward()

    def item(self):
        return self.value

    def __float__(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)

    def __repr__(self):
        return f"Loss({self.value!r})"


class CrossEntropyLoss:
    """Mean over the batch of -log softmax(logits)[label], for logits (N, K) and labels (N,) ints."""

    def __init__(self, backend=None):
        self.backend = _check_backend(backend)

    def __call__(self, logits, labels):
        kernels = ops(self.backend)
        value, cache = kernels.softmax_cross_entropy_forward(logits, labels)
        return Loss(value, lambda: kernels.softmax_cross_entropy_backward(1.0, cache))


class MSELoss:
    """Mean over all elements of (output - target)^2; gradient 2 (output - target) / output.size."""

    def __call__(self, output, target):
        output, target = np.asarray(output), np.asarray(target)
        if output.shape != target.shape:
            raise ValueError(f"output and target must have the same shape, got output {output.shape}, "
                             f"target {target.shape}")
        check_float("output", output)
        if output.size == 0:
            raise ValueError(f"output is empty (shape {output.shape})")
        diff = output - target.astype(output.dtype, copy=False)
        return Loss(np.mean(diff * diff), lambda: diff * (2.0 / diff.size))
