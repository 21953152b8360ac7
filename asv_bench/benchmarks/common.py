"""What fastnn's benchmarks measure, shared by the asv suites and scripts/compare_*.py.

- ``KERNEL_CASES``: every op at the shapes it has while training the models of DESIGN.md on MNIST
  (per image; the batch size is chosen by the caller), with ``make_inputs``, ``slice_inputs``,
  ``forward_backward`` (one forward and one backward call through a kernel namespace) and
  ``flops``.
- ``MODEL_NAMES`` / ``build_model``: the four models that are trained end to end.
- ``make_optimizer``, ``epoch_seconds``, ``inference_seconds``, ``warm_up_model``: the optimizer
  every benchmark trains with, one training epoch, one pass over a test set, and the untimed
  first calls that load or compile the jit kernels.
- ``jit_compile_seconds``: time ``fastnn.kernels.jit.warm_up`` in a fresh process.
- ``machine_note``, ``print_table``: the scripts' header line and aligned text tables.

No function here is named like an asv benchmark, so asv finds nothing to run in this module.
"""
import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from fastnn.kernels._common import output_size

from . import THREADS

FAST_BACKENDS = ("vectorized", "jit")


# -- kernels ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelCase:
    """One op at one training shape.

    ``op`` is the kernel family (``conv2d``, ``linear``, ...); ``shape`` is one image's input
    shape, ``(C, H, W)`` or ``(D,)``; ``params`` holds the rest: ``filters``, ``kernel``, ``pad``
    for conv2d, ``out_features`` for linear and linear_relu, ``size`` for maxpool2d, ``p`` for dropout, and for
    the fused ``conv2d_maxpool2d`` those of conv2d and maxpool2d plus ``relu``. ``first``: the
    model's first layer, whose backward skips the input gradient, as in training
    (``input_grad=False``).
    """
    name: str
    op: str
    shape: tuple
    params: dict = field(default_factory=dict)
    first: bool = False


KERNEL_CASES = (
    KernelCase("seed_cnn.conv", "conv2d", (1, 28, 28), dict(filters=8, kernel=3, pad=0), first=True),
    KernelCase("seed_cnn.pool", "maxpool2d", (8, 26, 26), dict(size=2)),
    KernelCase("seed_cnn.fc", "linear", (1352,), dict(out_features=10)),
    KernelCase("lenet.conv1", "conv2d", (1, 28, 28), dict(filters=32, kernel=3, pad=1), first=True),
    KernelCase("lenet.relu1", "relu", (32, 28, 28)),
    KernelCase("lenet.pool1", "maxpool2d", (32, 28, 28), dict(size=2)),
    KernelCase("lenet.conv2", "conv2d", (32, 14, 14), dict(filters=64, kernel=3, pad=1)),
    KernelCase("lenet.pool2", "maxpool2d", (64, 14, 14), dict(size=2)),
    KernelCase("lenet.fc1", "linear", (3136,), dict(out_features=128)),
    KernelCase("lenet.fc2", "linear", (128,), dict(out_features=10)),
    KernelCase("mlp.fc1", "linear", (784,), dict(out_features=512), first=True),
    KernelCase("mlp.batchnorm", "batchnorm", (512,)),
    KernelCase("mlp.relu", "relu", (512,)),
    KernelCase("mlp.dropout", "dropout", (512,), dict(p=0.5)),
    KernelCase("mlp.fc2", "linear", (512,), dict(out_features=10)),
    # Not a layer of the zoo: batch-norm on lenet's first feature map, as a student would add it.
    KernelCase("batchnorm2d", "batchnorm", (32, 28, 28)),
    KernelCase("softmax_ce", "softmax_cross_entropy", (10,)),
    # The fused conv [+ ReLU] + max-pool blocks the models actually run.
    KernelCase("seed_cnn.conv_pool", "conv2d_maxpool2d", (1, 28, 28),
               dict(filters=8, kernel=3, pad=0, size=2, relu=False), first=True),
    KernelCase("lenet.block1", "conv2d_maxpool2d", (1, 28, 28),
               dict(filters=32, kernel=3, pad=1, size=2, relu=True), first=True),
    KernelCase("lenet.block2", "conv2d_maxpool2d", (32, 14, 14),
               dict(filters=64, kernel=3, pad=1, size=2, relu=True)),
    # The fused Linear + ReLU hidden layers (mlp_bn_dropout's keeps its separate layers).
    KernelCase("mlp.fc1_relu", "linear_relu", (784,), dict(out_features=512), first=True),
    KernelCase("lenet.fc1_relu", "linear_relu", (3136,), dict(out_features=128)),
)

CASES_BY_NAME = {case.name: case for case in KERNEL_CASES}

# Inputs that carry the batch axis; everything else (weights, statistics) is shared by all images.
BATCHED_INPUTS = ("x", "dy", "mask", "logits", "labels")


def output_shape(case, n):
    """Shape of ``case``'s forward output for a batch of ``n`` images."""
    p = case.params
    if case.op in ("conv2d", "conv2d_maxpool2d"):
        _, H, W = case.shape
        OH, OW = output_size(H, p["kernel"], 1, p["pad"]), output_size(W, p["kernel"], 1, p["pad"])
        if case.op == "conv2d":
            return (n, p["filters"], OH, OW)
        size = p["size"]
        return (n, p["filters"], output_size(OH, size, size, 0), output_size(OW, size, size, 0))
    if case.op == "maxpool2d":
        C, H, W = case.shape
        return (n, C, output_size(H, p["size"], p["size"], 0), output_size(W, p["size"], p["size"], 0))
    if case.op in ("linear", "linear_relu"):
        return (n, p["out_features"])
    return (n, *case.shape)


def flops(case, n):
    """Floating-point operations of forward + backward (dw, and dx unless the case is a first
    layer) for ``n`` images; None unless the op is a conv (fused or not) or linear layer. Each of
    the products costs 2 * multiply-adds; the fused op's pooling and ReLU are not counted."""
    p = case.params
    products = 2 if case.first else 3
    if case.op in ("conv2d", "conv2d_maxpool2d"):
        C, H, W = case.shape
        OH, OW = output_size(H, p["kernel"], 1, p["pad"]), output_size(W, p["kernel"], 1, p["pad"])
        return products * 2.0 * n * p["filters"] * OH * OW * C * p["kernel"] ** 2
    if case.op in ("linear", "linear_relu"):
        return products * 2.0 * n * case.shape[0] * p["out_features"]
    return None


def make_inputs(case, n, dtype=np.float32, seed=0):
    """Random arguments for ``forward_backward``: a dict of arrays, batched ones with ``n`` rows.

    Each argument is drawn from its own Generator, so the first rows of a batch do not depend on
    ``n``: ``make_inputs(case, 2)`` equals ``slice_inputs(make_inputs(case, 64), 2)``.
    """
    def stream(name):
        return np.random.default_rng([seed, zlib.crc32(name.encode())])

    def normal(name, *shape, scale=1.0):
        return (stream(name).standard_normal(shape) * scale).astype(dtype)

    p = case.params
    if case.op == "softmax_cross_entropy":
        return dict(logits=normal("logits", n, *case.shape, scale=3.0),
                    labels=stream("labels").integers(0, case.shape[0], n))
    x = normal("x", n, *case.shape)
    dy = normal("dy", *output_shape(case, n))
    if case.op in ("conv2d", "conv2d_maxpool2d"):
        C = case.shape[0]
        fan_in = C * p["kernel"] ** 2
        w = normal("w", p["filters"], C, p["kernel"], p["kernel"], scale=np.sqrt(2.0 / fan_in))
        return dict(x=x, w=w, b=normal("b", p["filters"]), dy=dy)
    if case.op in ("linear", "linear_relu"):
        D = case.shape[0]
        w = normal("w", D, p["out_features"], scale=np.sqrt(2.0 / D))
        return dict(x=x, w=w, b=normal("b", p["out_features"]), dy=dy)
    if case.op == "batchnorm":
        C = case.shape[0]
        return dict(x=x, gamma=1 + normal("gamma", C, scale=0.1), beta=normal("beta", C, scale=0.1),
                    running_mean=np.zeros(C, dtype), running_var=np.ones(C, dtype), dy=dy)
    if case.op == "dropout":
        return dict(x=x, mask=stream("mask").random(x.shape) >= p["p"], dy=dy)
    return dict(x=x, dy=dy)   # maxpool2d, relu


def slice_inputs(inputs, n):
    """The same arguments restricted to the first ``n`` images (copies, so they are contiguous)."""
    return {k: a[:n].copy() if k in BATCHED_INPUTS else a for k, a in inputs.items()}


def forward_backward(ops, case, a):
    """Run ``case``'s forward then backward through the kernel namespace ``ops`` on the inputs
    ``a`` (from ``make_inputs``); return a tuple of the forward output and every gradient."""
    p = case.params
    if case.op == "conv2d":
        y, cache = ops.conv2d_forward(a["x"], a["w"], a["b"], 1, p["pad"])
        return (y, *ops.conv2d_backward(a["dy"], cache, input_grad=not case.first))
    if case.op == "conv2d_maxpool2d":
        y, cache = ops.conv2d_maxpool2d_forward(a["x"], a["w"], a["b"], 1, p["pad"], p["size"], None,
                                                p["relu"])
        return (y, *ops.conv2d_maxpool2d_backward(a["dy"], cache, input_grad=not case.first))
    if case.op in ("linear", "linear_relu"):
        y, cache = getattr(ops, f"{case.op}_forward")(a["x"], a["w"], a["b"])
        return (y, *getattr(ops, f"{case.op}_backward")(a["dy"], cache, input_grad=not case.first))
    if case.op == "maxpool2d":
        y, cache = ops.maxpool2d_forward(a["x"], p["size"])
        return y, ops.maxpool2d_backward(a["dy"], cache)
    if case.op == "relu":
        y, cache = ops.relu_forward(a["x"])
        return y, ops.relu_backward(a["dy"], cache)
    if case.op == "softmax_cross_entropy":
        loss, cache = ops.softmax_cross_entropy_forward(a["logits"], a["labels"])
        return np.asarray(loss), ops.softmax_cross_entropy_backward(1.0, cache)
    if case.op == "batchnorm":
        y, cache, running_mean, running_var = ops.batchnorm_forward(
            a["x"], a["gamma"], a["beta"], a["running_mean"], a["running_var"], training=True)
        return (y, running_mean, running_var, *ops.batchnorm_backward(a["dy"], cache))
    if case.op == "dropout":
        y, cache = ops.dropout_forward(a["x"], a["mask"], p["p"])
        return y, ops.dropout_backward(a["dy"], cache)
    raise ValueError(f"unknown op {case.op!r} in case {case.name!r}")


def max_abs_difference(outputs, expected):
    """Largest |a - b| over every pair of arrays of two ``forward_backward`` results (a first
    layer's dx is None in both)."""
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in zip(outputs, expected, strict=True) if b is not None)


# -- models -------------------------------------------------------------------------------------

MODEL_NAMES = ("mlp", "mlp_bn_dropout", "seed_cnn", "lenet")
LEARNING_RATE = 0.01
MOMENTUM = 0.9
DROPOUT = 0.5


def build_model(name, backend=None, seed=0):
    """One of ``MODEL_NAMES``: ``mlp`` is 784-512-10; ``mlp_bn_dropout`` adds BatchNorm1d and
    Dropout(0.5) after the hidden Linear; ``seed_cnn`` and ``lenet`` as in fastnn.models."""
    from fastnn import models

    if name == "mlp":
        return models.mlp(hidden=(512,), seed=seed, backend=backend)
    if name == "mlp_bn_dropout":
        return models.mlp(hidden=(512,), batchnorm=True, dropout=DROPOUT, seed=seed, backend=backend)
    if name in ("seed_cnn", "lenet"):
        return models.MODELS[name](seed=seed, backend=backend)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def load_mnist():
    """MNIST from $FASTNN_DATA_DIR (or fastnn's usual places), as fastnn.data.load_mnist."""
    from fastnn.data import load_mnist as load

    return load()


def epoch_seconds(model, loader, optimizer=None):
    """Wall-clock seconds of one ``fastnn.train.train_epoch`` with cross-entropy and ``optimizer``
    (None: a new SGD, lr 0.01, momentum 0.9, made before the clock starts)."""
    from fastnn.losses import CrossEntropyLoss
    from fastnn.train import train_epoch

    criterion = CrossEntropyLoss()
    if optimizer is None:
        optimizer = make_optimizer(model)
    start = time.perf_counter()
    train_epoch(model, loader, criterion, optimizer, progress=False)
    return time.perf_counter() - start


def make_optimizer(model):
    """The optimizer every benchmark trains with: SGD, lr 0.01, momentum 0.9."""
    from fastnn.optim import SGD

    return SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def inference_seconds(model, loader):
    """Wall-clock seconds of the forward passes over ``loader`` in eval mode, each batch's
    predicted classes taken as a user would."""
    model.eval()
    start = time.perf_counter()
    for x, _ in loader:
        np.argmax(model(x), axis=1)
    return time.perf_counter() - start


def warm_up_model(name, backend, batch_size, images, labels):
    """Train a throwaway copy of the model on two batches and run it once in eval mode, so
    that jit kernels are compiled (or loaded from the disk cache) before anything is timed."""
    from fastnn.data import DataLoader

    model = build_model(name, backend)
    loader = DataLoader(images[:2 * batch_size], labels[:2 * batch_size], batch_size=batch_size)
    epoch_seconds(model, loader)
    inference_seconds(model, loader)


# -- jit compilation ----------------------------------------------------------------------------

_COMPILE_SNIPPET = """
import time, numpy as np
import fastnn.kernels.jit as jit
start = time.perf_counter()
jit.warm_up(np.float32)
print(time.perf_counter() - start)
"""


def jit_compile_seconds(cache_dir):
    """Seconds ``fastnn.kernels.jit.warm_up(float32)`` takes in a new process whose Numba cache is
    ``cache_dir``: an empty directory gives the cold compile time, a second call the warm one."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    result = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET], env=env, capture_output=True,
                            text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


# -- reports ------------------------------------------------------------------------------------

def busy_fraction(seconds=0.5):
    """Fraction of all cores' time spent busy over ``seconds`` while this process sleeps (from
    /proc/stat), or None where there is no /proc/stat."""
    def busy_and_total():
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle, iowait
        return sum(ticks) - idle, sum(ticks)

    try:
        busy_before, total_before = busy_and_total()
        time.sleep(seconds)
        busy_after, total_after = busy_and_total()
    except (OSError, ValueError, IndexError):
        return None
    return (busy_after - busy_before) / max(1, total_after - total_before)


def machine_note():
    """One line on what the timings ran on, and a warning if other processes were using the
    cores just before: on this 2-core machine any other busy process slows 2-thread BLAS down
    many times over, so such a run is not to be trusted. (The load average alone would warn
    after any earlier benchmark: it decays over minutes.)"""
    import fastnn

    load = os.getloadavg()[0]
    busy = busy_fraction()
    busy_now = load > 0.5 if busy is None else busy > 0.1
    measured = f"load average {load:.2f}" + ("" if busy is None else f", cores {busy:.0%} busy")
    warning = "  -- the machine is busy: timings are unreliable" if busy_now else ""
    return (f"fastnn {fastnn.__version__}, numpy {np.__version__}, float32, {THREADS} threads, "
            f"{os.cpu_count()} cores, {measured} before the run{warning}")


def print_table(header, rows):
    """Print ``rows`` (lists of cells) under ``header`` in aligned columns, the first to the left."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).rjust(w) if i else str(cell).ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))))
