"""Random inputs for the kernel tests: one generator per op, shared by every backend's tests.

    inputs, dy = case("conv2d", seed=7, dtype=np.float32)
    results = run(fastnn.kernels.get("vectorized"), "conv2d", inputs, dy)   # {"y": ..., "dx": ..., ...}

``CASES[op](rng, dtype, small=False)`` draws the keyword arguments of ``{op}_forward`` from a
``numpy.random.Generator``: odd and non-square images, batch 1, one or several channels, kernels
1-5, strides 1-3, padding 0-2, float32 or float64, and arrays that are often not C-contiguous
(Fortran order, or every other element of a bigger array). ``small=True`` keeps every dimension
tiny, for finite differences. Pooling inputs are tie-free (distinct values 0.5 apart) and ReLU
inputs (also linear_relu's x @ w + b) stay at least 0.05 away from 0, so both are differentiable
at every drawn point.
"""
import numpy as np

from fastnn.kernels._common import output_size

OPS = ("linear", "conv2d", "maxpool2d", "relu", "softmax_cross_entropy", "batchnorm", "dropout",
       "conv2d_maxpool2d", "linear_relu")

# The inputs each op's backward differentiates, in the order it returns their gradients.
GRADIENTS = {
    "linear": ("x", "w", "b"),
    "conv2d": ("x", "w", "b"),
    "maxpool2d": ("x",),
    "relu": ("x",),
    "softmax_cross_entropy": ("logits",),
    "batchnorm": ("x", "gamma", "beta"),
    "dropout": ("x",),
    "conv2d_maxpool2d": ("x", "w", "b"),
    "linear_relu": ("x", "w", "b"),
}


def relayout(rng, a):
    """An array equal to ``a``: as it is, in Fortran order, or a strided view into a bigger array."""
    layout = rng.integers(3)
    if layout == 1:
        return np.asfortranarray(a)
    if layout == 2:
        bigger = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        bigger[..., ::2] = a
        return bigger[..., ::2]
    return a


def _normal(rng, shape, dtype, scale=1.0):
    return relayout(rng, (scale * rng.standard_normal(shape)).astype(dtype))


def _any_shape(rng, small):
    """A shape of rank 1 to 4 with sides 1..6 (1..3 when small)."""
    return tuple(int(s) for s in rng.integers(1, 4 if small else 7, size=rng.integers(1, 5)))


def linear_case(rng, dtype, small=False):
    N, D, F = rng.integers(1, (4, 7, 6) if small else (9, 17, 17))
    return {"x": _normal(rng, (N, D), dtype), "w": _normal(rng, (D, F), dtype), "b": _normal(rng, (F,), dtype)}


def conv2d_case(rng, dtype, small=False):
    N, C, F = rng.integers(1, 3 if small else 5, size=3)
    KH, KW = rng.integers(1, 6, size=2)
    stride = int(rng.integers(1, 4))
    pad = int(rng.integers(0, 3))
    max_side = 7 if small else 12
    H = rng.integers(max(1, KH - 2 * pad), max_side + 1)
    W = rng.integers(max(1, KW - 2 * pad), max_side + 1)
    return {"x": _normal(rng, (N, C, H, W), dtype), "w": _normal(rng, (F, C, KH, KW), dtype),
            "b": _normal(rng, (F,), dtype), "stride": stride, "pad": pad}


def maxpool2d_case(rng, dtype, small=False):
    N, C = rng.integers(1, 3 if small else 5, size=2)
    size = int(rng.integers(1, 4 if small else 5))
    stride = None if rng.random() < 0.3 else int(rng.integers(1, 4))
    max_side = 7 if small else 12
    H, W = rng.integers(size, max_side + 1, size=2)
    distinct = 0.5 * (rng.permutation(N * C * H * W) - N * C * H * W / 2)  # tie-free
    return {"x": relayout(rng, distinct.reshape(N, C, H, W).astype(dtype)), "size": size, "stride": stride}


def relu_case(rng, dtype, small=False):
    shape = _any_shape(rng, small)
    magnitude = rng.uniform(0.05, 2.0, size=shape)
    sign = rng.choice([-1.0, 1.0], size=shape)
    return {"x": relayout(rng, (sign * magnitude).astype(dtype))}


def bias_keeping_away_from_zero(rng, products, dtype):
    """b (F,) such that every products[n, f] + b[f] is at least 0.05 away from 0 (each b[f] is
    drawn again until its column is): products (N, F) in float64."""
    b = np.empty(products.shape[1])
    for f in range(products.shape[1]):
        b[f] = rng.standard_normal()
        while np.abs(products[:, f] + b[f]).min() < 0.05:
            b[f] = rng.standard_normal()
    return b.astype(dtype)


def linear_relu_case(rng, dtype, small=False):
    """A linear case with up to 40 outputs, the bias drawn so that no ReLU input is near 0 (a
    rounding error would otherwise move the kink, and finite differences would straddle it)."""
    N, D, F = rng.integers(1, (4, 7, 6) if small else (9, 17, 41))
    x, w = (rng.standard_normal(shape).astype(dtype) for shape in ((N, D), (D, F)))
    b = bias_keeping_away_from_zero(rng, x.astype(np.float64) @ w.astype(np.float64), dtype)
    return {"x": relayout(rng, x), "w": relayout(rng, w), "b": relayout(rng, b)}


def conv2d_maxpool2d_case(rng, dtype, small=False):
    """A conv2d case (mostly stride 1, the fused fast path), then a ReLU or not, then a pooling
    window that fits the convolution's output. Conv outputs are sums of products of normal
    values, so ties and values within rounding of 0 have probability ~0."""
    inputs = conv2d_case(rng, dtype, small)
    if rng.random() < 0.8:
        inputs["stride"] = 1
    N, _, H, W = inputs["x"].shape
    _, _, KH, KW = inputs["w"].shape
    OH = output_size(H, KH, inputs["stride"], inputs["pad"])
    OW = output_size(W, KW, inputs["stride"], inputs["pad"])
    size = int(rng.integers(1, min(OH, OW, 3) + 1))
    pool_stride = None if rng.random() < 0.5 else int(rng.integers(1, 3))
    return dict(inputs, size=size, pool_stride=pool_stride, relu=bool(rng.random() < 0.5))


def softmax_cross_entropy_case(rng, dtype, small=False):
    N = rng.integers(1, 5 if small else 9)
    K = rng.integers(1, 6 if small else 11)
    label_dtype = (np.int64, np.int32, np.uint8)[rng.integers(3)]
    labels = relayout(rng, rng.integers(0, K, size=N).astype(label_dtype))
    return {"logits": _normal(rng, (N, K), dtype, scale=rng.choice([1.0, 5.0])), "labels": labels}


def batchnorm_case(rng, dtype, small=False):
    training = bool(rng.random() < 0.75)
    while True:
        if rng.random() < 0.5:
            shape = (rng.integers(1, 5 if small else 9), rng.integers(1, 4 if small else 6))
        else:
            N, C, H, W = rng.integers(1, (3, 3, 4, 4) if small else (4, 5, 6, 6))
            shape = (N, C, H, W)
        if not training or np.prod(shape) // shape[1] >= 2:
            break
    C = shape[1]
    channel_means = rng.normal(0.0, 2.0, size=C).reshape((1, C) + (1,) * (len(shape) - 2))
    x = channel_means + rng.uniform(0.5, 2.0) * rng.standard_normal(shape)
    return {
        "x": relayout(rng, x.astype(dtype)),
        "gamma": _normal(rng, (C,), dtype),
        "beta": _normal(rng, (C,), dtype),
        "running_mean": _normal(rng, (C,), dtype),
        "running_var": relayout(rng, rng.uniform(0.5, 2.0, size=C).astype(dtype)),
        "momentum": float(rng.choice([0.1, rng.uniform(0.0, 1.0)])),
        "eps": float(rng.choice([1e-5, 1e-3])),
        "training": training,
    }


def dropout_case(rng, dtype, small=False):
    shape = _any_shape(rng, small)
    p = float(rng.choice([0.0, 0.5, rng.uniform(0.0, 0.95)]))
    return {"x": _normal(rng, shape, dtype), "mask": relayout(rng, rng.random(shape) >= p), "p": p}


CASES = {
    "linear": linear_case,
    "conv2d": conv2d_case,
    "maxpool2d": maxpool2d_case,
    "relu": relu_case,
    "softmax_cross_entropy": softmax_cross_entropy_case,
    "batchnorm": batchnorm_case,
    "dropout": dropout_case,
    "conv2d_maxpool2d": conv2d_maxpool2d_case,
    "linear_relu": linear_relu_case,
}


def output_shape(op, inputs):
    """Shape of ``{op}_forward``'s first result for these inputs (() for the loss)."""
    if op in ("linear", "linear_relu"):
        return (inputs["x"].shape[0], inputs["w"].shape[1])
    if op == "conv2d":
        N, _, H, W = inputs["x"].shape
        F, _, KH, KW = inputs["w"].shape
        stride, pad = inputs["stride"], inputs["pad"]
        return (N, F, output_size(H, KH, stride, pad), output_size(W, KW, stride, pad))
    if op == "maxpool2d":
        N, C, H, W = inputs["x"].shape
        size = inputs["size"]
        stride = inputs["stride"] or size
        return (N, C, output_size(H, size, stride, 0), output_size(W, size, stride, 0))
    if op == "conv2d_maxpool2d":
        N, F, OH, OW = output_shape("conv2d", inputs)
        size = inputs["size"]
        stride = inputs["pool_stride"] or size
        return (N, F, output_size(OH, size, stride, 0), output_size(OW, size, stride, 0))
    if op == "softmax_cross_entropy":
        return ()
    return inputs["x"].shape


def draw_dy(rng, op, inputs):
    """The gradient flowing into ``{op}_backward``: an array of the output's shape and dtype, or for
    the loss a float or 0-d array."""
    dtype = next(a.dtype for a in inputs.values() if isinstance(a, np.ndarray) and a.dtype.kind == "f")
    if op == "softmax_cross_entropy":
        dloss = rng.uniform(0.5, 2.0)
        return dloss if rng.random() < 0.5 else np.asarray(dloss, dtype=dtype)
    return _normal(rng, output_shape(op, inputs), dtype)


def case(op, seed, dtype, small=False):
    """(forward keyword arguments, dy) of case number ``seed`` of ``op``, reproducibly."""
    rng = np.random.default_rng([seed, OPS.index(op)])
    inputs = CASES[op](rng, np.dtype(dtype), small=small)
    return inputs, draw_dy(rng, op, inputs)


def run(kernels, op, inputs, dy):
    """Forward then backward of ``op`` from the kernel namespace ``kernels``; every result by name.

    Names: "y" (the loss for softmax_cross_entropy), "running_mean" and "running_var" (batchnorm's
    new running statistics), and "d" + input name for each gradient, e.g. "dx", "dw", "dlogits".
    """
    y, cache, *running = getattr(kernels, f"{op}_forward")(**inputs)
    grads = getattr(kernels, f"{op}_backward")(dy, cache)
    if len(GRADIENTS[op]) == 1:
        grads = (grads,)
    results = {"y": y}
    if running:
        results["running_mean"], results["running_var"] = running
    for name, grad in zip(GRADIENTS[op], grads, strict=True):
        results["d" + name] = grad
    return results


def describe(inputs):
    """One line naming every input's shape, dtype and layout, and every other argument."""
    parts = []
    for name, value in inputs.items():
        if isinstance(value, np.ndarray):
            layout = "C" if value.flags.c_contiguous else "F" if value.flags.f_contiguous else "strided"
            parts.append(f"{name} {value.shape} {value.dtype} {layout}")
        else:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)
