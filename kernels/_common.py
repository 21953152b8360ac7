"""Helpers shared by every backend: output-size arithmetic and argument checks.

Every check raises ``ValueError`` naming the argument and the shapes involved, so that all
three backends reject bad input with the same message.
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float(name, a):
    if a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got dtype {a.dtype}")


def check_ndim(name, a, ndims):
    if a.ndim not in ndims:
        expected = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {expected} dimensions, got shape {a.shape}")


def check_nonempty(name, a):
    if a.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {a.shape})")


def check_same_dtype(**arrays):
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) > 1:
        described = ", ".join(f"{k}: {a.dtype}" for k, a in arrays.items())
        raise ValueError(f"arrays must share one dtype, got {described}")


def output_size(size, kernel, stride, pad):
    """Number of window positions along one axis: floor((size + 2*pad - kernel) / stride) + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def check_linear(x, w, b):
    """Validate linear_forward arguments: x (N, D), w (D, F), b (F,)."""
    check_ndim("x", x, (2,))
    check_ndim("w", w, (2,))
    check_ndim("b", b, (1,))
    check_nonempty("x", x)
    check_float("x", x)
    check_same_dtype(x=x, w=w, b=b)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features but w expects {w.shape[0]}: x {x.shape}, w {w.shape}")
    if b.shape[0] != w.shape[1]:
        raise ValueError(f"b has shape {b.shape} but w has {w.shape[1]} outputs: w {w.shape}")


def check_conv2d(x, w, b, stride, pad):
    """Validate conv2d_forward arguments; return the output size (OH, OW)."""
    check_ndim("x", x, (4,))
    check_ndim("w", w, (4,))
    check_ndim("b", b, (1,))
    check_nonempty("x", x)
    check_float("x", x)
    check_same_dtype(x=x, w=w, b=b)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but w expects {w.shape[1]}: x {x.shape}, w {w.shape}")
    if b.shape[0] != w.shape[0]:
        raise ValueError(f"b has shape {b.shape} but w has {w.shape[0]} filters: w {w.shape}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if int(pad) != pad or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    H, W = x.shape[2:]
    KH, KW = w.shape[2:]
    if KH > H + 2 * pad or KW > W + 2 * pad:
        raise ValueError(f"kernel {KH}x{KW} is larger than the padded input {H + 2 * pad}x{W + 2 * pad}: "
                         f"x {x.shape}, w {w.shape}, pad {pad}")
    return output_size(H, KH, stride, pad), output_size(W, KW, stride, pad)


def check_maxpool2d(x, size, stride):
    """Validate maxpool2d_forward arguments; return (stride, OH, OW) with stride None -> size."""
    check_ndim("x", x, (4,))
    check_nonempty("x", x)
    check_float("x", x)
    return check_pool_window(x.shape, size, stride)


def check_pool_window(shape, size, stride):
    """Validate a pooling window and stride over an input of ``shape`` (N, C, H, W); return
    (stride, OH, OW) with stride None -> size."""
    if stride is None:
        stride = size
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    H, W = shape[2:]
    if size > H or size > W:
        raise ValueError(f"pooling window {size}x{size} is larger than the input {H}x{W}: x {tuple(shape)}")
    return stride, output_size(H, size, stride, 0), output_size(W, size, stride, 0)


def check_softmax_cross_entropy(logits, labels, label_values=True):
    """Validate logits (N, K) float and labels (N,) integers in [0, K). ``label_values=False``:
    all but the last (labels in [0, K)), which the caller then checks itself, raising
    ``labels_out_of_range(logits, labels)``."""
    check_ndim("logits", logits, (2,))
    check_ndim("labels", labels, (1,))
    check_nonempty("logits", logits)
    check_float("logits", logits)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but logits has {logits.shape[0]} rows: "
                         f"logits {logits.shape}, labels {labels.shape}")
    if label_values and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise labels_out_of_range(logits, labels)


def labels_out_of_range(logits, labels):
    """The ValueError for labels (N,) not all in [0, K) for logits (N, K)."""
    return ValueError(f"labels must lie in [0, {logits.shape[1]}) for logits {logits.shape}, "
                      f"got values from {labels.min()} to {labels.max()}")


def check_batchnorm(x, gamma, beta, running_mean, running_var, training):
    """Validate batchnorm_forward arguments: x (N, C) or (N, C, H, W), the rest (C,)."""
    check_ndim("x", x, (2, 4))
    check_nonempty("x", x)
    check_float("x", x)
    C = x.shape[1]
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if a.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) for x {x.shape}, got {a.shape}")
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    values_per_channel = x.size // C
    if training and values_per_channel < 2:
        raise ValueError(f"batchnorm in training mode needs more than one value per channel, got x {x.shape}")


def running_statistics(running_mean, running_var, batch_mean, batch_var, count, momentum):
    """Batch norm's running statistics after one training batch, as new arrays (PyTorch's rule):
    running = (1 - momentum) * running + momentum * batch, with the batch variance (biased, over
    ``count`` values per channel) made unbiased for running_var."""
    momentum = float(momentum)
    return ((1 - momentum) * running_mean + momentum * batch_mean,
            (1 - momentum) * running_var + momentum * batch_var * (count / (count - 1)))


def check_dropout_p(p):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}")


def check_dropout(x, mask, p):
    """Validate dropout_forward arguments: mask bool of x's shape, 0 <= p < 1."""
    check_float("x", x)
    if mask.shape != x.shape:
        raise ValueError(f"mask must have x's shape {x.shape}, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool, got dtype {mask.dtype}")
    check_dropout_p(p)


# SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014, in
# Vigna's public-domain form): state += INCREMENT; z = state; z = (z ^ z >> 30) * MULTIPLIER_1;
# z = (z ^ z >> 27) * MULTIPLIER_2; output z ^ z >> 31, all modulo 2**64. Its i-th output
# (i = 1, 2, ...) depends on the seed and i alone, so any element of a mask can be drawn on its own.
SPLITMIX64_INCREMENT = 0x9E3779B97F4A7C15
SPLITMIX64_MULTIPLIER_1 = 0xBF58476D1CE4E5B9
SPLITMIX64_MULTIPLIER_2 = 0x94D049BB133111EB


def dropout_mask_threshold(shape, p, seed):
    """Validate dropout_mask arguments; return the drop threshold round(p * 2**32): an element
    whose 32-bit draw (the top half of a SplitMix64 output) is below it is dropped."""
    if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
        raise ValueError(f"shape must be a tuple of non-negative integers, got {shape!r}")
    check_dropout_p(p)
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**64):
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return round(p * 2**32)
