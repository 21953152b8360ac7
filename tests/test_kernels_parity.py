"""Every faster backend agrees with the reference on every op, output and gradient.

Each op is run on 100 random cases (kernel_cases, seeds 0-99) in float32 and float64; the test id
names backend, op, seed and dtype, so ``kernel_cases.case(op, seed, dtype)`` replays a failure.
The reference runs on the very same inputs (same dtype), so both sides make only rounding errors.

Tolerances, for every result array (output, each gradient, batchnorm's running statistics):
    max |fast - reference|  <=  rtol * max(max |reference|, 1)
The scale is the array's largest magnitude, floored at 1 because the inputs are O(1): a result
that is small only through cancellation (a bias gradient summing to ~0) still carries rounding
errors of the size of its O(1) terms.
- float64: rtol = 1e-10. Rounding error of a sum of n terms is at most about n * eps64 relative
  (Higham's bound gamma_n = n*u with u = eps/2, for each side); our longest sum has n = 3136,
  so honest float64 kernels differ by < 1e-12 and 1e-10 leaves a wide margin, while any real
  bug (a missing term, a wrong index, a wrong stride or padding) is off by far more.
- float32: rtol = 4 * (n + 4) * eps32, with n the longest sum behind the op's results in this
  case (accumulation_length below: e.g. C*KH*KW for a conv output, N*OH*OW for its weight
  gradient). Each side's float32 sum of n terms is off by at most ~ n * u * (size of the terms),
  so the two may differ by n * eps32 times the term size; "+ 4" counts the few roundings outside
  the sums (subtract, multiply, exp, log, sqrt, divide), and the factor 4 covers terms somewhat
  larger than the result (batch-norm channels whose mean is several standard deviations from 0
  lose that much more in x - mean). Measured on 300 cases per op (vectorized and jit as first
  written), the largest float32 error was 0.17 of this tolerance (batchnorm dgamma, 9 values per
  channel; every other op below 0.06), and the largest float64 error 2e-15.
A faster kernel that misses these is wrong, not imprecise: fix the kernel, never widen these.
"""
import functools

import numpy as np
import pytest

import kernel_cases
from fastnn import kernels

SEEDS = range(100)
DTYPES = ("float32", "float64")
# Every (backend, op) a faster backend serves with its own code; an op it leaves to its fallback
# (jit -> vectorized) is already tested under the fallback's name.
SERVED = [pytest.param(backend, op, id=f"{backend}-{op}")
          for backend in kernels.BACKENDS if backend != "reference"
          for op in kernel_cases.OPS if kernels.provider(backend, f"{op}_forward") == backend]

RTOL_FLOAT64 = 1e-10
FLOAT32_SAFETY = 4


def accumulation_length(op, inputs):
    """Longest sum behind any result of ``op`` for these inputs."""
    if op in ("linear", "linear_relu"):
        N, D = inputs["x"].shape
        return max(D, N, inputs["w"].shape[1])  # y sums D terms; dw, db sum N; dx sums F
    if op == "conv2d":
        N, C = inputs["x"].shape[:2]
        F, _, KH, KW = inputs["w"].shape
        _, _, OH, OW = kernel_cases.output_shape(op, inputs)
        return max(C * KH * KW, N * OH * OW, F * KH * KW)  # y; dw and db; dx
    if op == "conv2d_maxpool2d":  # the convolution's sums, dx's summing up to size**2 pooled gradients
        return accumulation_length("conv2d", inputs) * inputs["size"] ** 2
    if op == "maxpool2d":
        return inputs["size"] ** 2  # overlapping windows add up to size*size gradients
    if op == "softmax_cross_entropy":
        return max(inputs["logits"].shape)  # sum over K classes, mean over N rows
    if op == "batchnorm":
        return inputs["x"].size // inputs["x"].shape[1]  # every statistic sums a channel's values
    return 1  # relu, dropout: elementwise


def rtol(op, inputs, dtype):
    if dtype == "float64":
        return RTOL_FLOAT64
    return FLOAT32_SAFETY * (accumulation_length(op, inputs) + 4) * float(np.finfo(np.float32).eps)


def assert_matches(backend, op, inputs, got, expected, dtype):
    """Every result of ``got`` has the reference's shape and dtype and lies within tolerance."""
    tolerance = rtol(op, inputs, dtype)
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        have = np.asarray(got[name])
        want = np.asarray(want)
        assert have.shape == want.shape, f"{name}: shape {have.shape}, reference {want.shape}"
        assert have.dtype == want.dtype, f"{name}: dtype {have.dtype}, reference {want.dtype}"
        error = np.abs(have.astype(np.float64) - want.astype(np.float64)).max(initial=0.0)
        scale = max(np.abs(want.astype(np.float64)).max(initial=0.0), 1.0)
        assert error <= tolerance * scale, (
            f"{backend} {op} {name} differs from reference by {error:.3g} "
            f"(allowed {tolerance:.3g} x scale {scale:.3g}) on {kernel_cases.describe(inputs)}")


@functools.cache
def reference_results(op, seed, dtype):
    inputs, dy = kernel_cases.case(op, seed, dtype)
    return kernel_cases.run(kernels.get("reference"), op, inputs, dy)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS, ids=lambda seed: f"case{seed}")
@pytest.mark.parametrize("backend, op", SERVED)
def test_backend_matches_reference(backend, op, seed, dtype):
    inputs, dy = kernel_cases.case(op, seed, dtype)
    expected = reference_results(op, seed, dtype)
    got = kernel_cases.run(kernels.get(backend), op, inputs, dy)
    assert_matches(backend, op, inputs, got, expected, dtype)


def model_shaped_case(op, dtype):
    """(inputs, dy) at the shapes of the model zoo's layers (two images), where blocked or
    multi-threaded code paths of the faster kernels take over."""
    rng = np.random.default_rng(2024)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    if op == "conv2d":  # lenet's second convolution: 32 -> 64 channels, 3x3, pad 1, on 14x14
        inputs = {"x": normal(2, 32, 14, 14), "w": normal(64, 32, 3, 3) / 17, "b": normal(64), "stride": 1, "pad": 1}
    elif op == "conv2d_maxpool2d":  # lenet's second convolution, ReLU and pooling
        inputs = {"x": normal(2, 32, 14, 14), "w": normal(64, 32, 3, 3) / 17, "b": normal(64), "stride": 1,
                  "pad": 1, "size": 2, "pool_stride": None, "relu": True}
    elif op == "maxpool2d":  # lenet's first pooling, tie-free
        distinct = rng.permutation(2 * 32 * 28 * 28).reshape(2, 32, 28, 28)
        inputs = {"x": distinct.astype(dtype), "size": 2, "stride": None}
    elif op == "softmax_cross_entropy":  # a batch of 64 over the 10 digits
        inputs = {"logits": normal(64, 10), "labels": rng.integers(0, 10, size=64)}
    elif op == "linear":  # lenet's Linear 3136 -> 128
        inputs = {"x": normal(2, 3136), "w": normal(3136, 128) / 56, "b": normal(128)}
    elif op == "linear_relu":  # mlp's hidden layer 784 -> 512, no ReLU input near 0
        x, w = normal(2, 784), normal(784, 512) / 28
        b = kernel_cases.bias_keeping_away_from_zero(rng, x.astype(np.float64) @ w.astype(np.float64), dtype)
        inputs = {"x": x, "w": w, "b": b}
    elif op == "batchnorm":  # BatchNorm2d over 32 channels of 14x14
        inputs = {"x": normal(2, 32, 14, 14), "gamma": normal(32), "beta": normal(32),
                  "running_mean": normal(32), "running_var": np.ones(32, dtype), "momentum": 0.1,
                  "eps": 1e-5, "training": True}
    else:  # relu, dropout: elementwise on lenet's first activation
        inputs = {"x": normal(2, 32, 28, 28)}
        if op == "dropout":
            inputs.update(mask=rng.random((2, 32, 28, 28)) >= 0.5, p=0.5)
    return inputs, kernel_cases.draw_dy(rng, op, inputs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend, op", SERVED)
def test_backend_matches_reference_at_model_shapes(backend, op, dtype):
    inputs, dy = model_shaped_case(op, dtype)
    expected = kernel_cases.run(kernels.get("reference"), op, inputs, dy)
    got = kernel_cases.run(kernels.get(backend), op, inputs, dy)
    assert_matches(backend, op, inputs, got, expected, dtype)


@pytest.mark.parametrize("seed", range(20), ids=lambda seed: f"case{seed}")
def test_vectorized_conv2d_in_batch_chunks_matches_reference(monkeypatch, seed):
    # Shrink the column buffer so that every sample is its own chunk: the chunked path that
    # full-size batches take (forward, and columns rebuilt in backward) is then tested too.
    from fastnn.kernels.vectorized import conv2d as vectorized_conv2d
    monkeypatch.setattr(vectorized_conv2d, "COLUMN_BUFFER_BYTES", 1)
    inputs, dy = kernel_cases.case("conv2d", seed, "float64")
    got = kernel_cases.run(kernels.get("vectorized"), "conv2d", inputs, dy)
    assert_matches("vectorized", "conv2d", inputs, got, reference_results("conv2d", seed, "float64"), "float64")


@pytest.mark.parametrize("seed", range(20), ids=lambda seed: f"case{seed}")
@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("op", ["linear", "conv2d", "conv2d_maxpool2d", "linear_relu"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(op, backend, seed):
    ops = kernels.get(backend)
    inputs, dy = kernel_cases.case(op, seed, "float64")
    _, cache = getattr(ops, f"{op}_forward")(**inputs)
    dx, dw, db = getattr(ops, f"{op}_backward")(dy, cache, input_grad=False)
    expected = reference_results(op, seed, "float64")
    assert dx is None
    assert_matches(backend, op, inputs, {"dw": dw, "db": db}, {"dw": expected["dw"], "db": expected["db"]},
                   "float64")


@pytest.mark.parametrize("seed", range(20), ids=lambda seed: f"case{seed}")
@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_conv2d_maxpool2d_for_inference_gives_the_same_output(backend, seed):
    inputs, _ = kernel_cases.case("conv2d_maxpool2d", seed, "float32")
    y, _ = getattr(kernels.get(backend), "conv2d_maxpool2d_forward")(**inputs, need_backward=False)
    expected = reference_results("conv2d_maxpool2d", seed, "float32")
    assert_matches(backend, "conv2d_maxpool2d", inputs, {"y": y}, {"y": expected["y"]}, "float32")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(30), ids=lambda seed: f"case{seed}")
def test_jit_narrow_linear_split_over_threads_matches_reference(monkeypatch, seed, dtype):
    # Heads with at least PARALLEL_D inputs cut the batch over the threads (jit/linear.py): with
    # the line moved to 1 the random cases take that path; the last seeds are seed_cnn's head.
    # Three slices (uneven ones, too) whatever the machine's thread count.
    from fastnn.kernels.jit import linear
    monkeypatch.setattr(linear, "PARALLEL_D", 1)
    monkeypatch.setattr(linear, "batch_chunks", lambda N: min(N, 3))
    if seed < 25:
        inputs, dy = kernel_cases.case("linear", seed, dtype)
    else:
        rng = np.random.default_rng([seed, 1352])
        N = int(rng.integers(1, 10))
        inputs = {"x": kernel_cases.relayout(rng, rng.standard_normal((N, 1352)).astype(dtype)),
                  "w": (rng.standard_normal((1352, 10)) / 37).astype(dtype), "b": rng.standard_normal(10).astype(dtype)}
        dy = kernel_cases.draw_dy(rng, "linear", inputs)
    ops = kernels.get("jit")
    expected = kernel_cases.run(kernels.get("reference"), "linear", inputs, dy)
    assert_matches("jit", "linear", inputs, kernel_cases.run(ops, "linear", inputs, dy), expected, dtype)
    _, cache = ops.linear_forward(**inputs)
    dx, dw, db = ops.linear_backward(dy, cache, input_grad=False)
    assert dx is None
    assert_matches("jit", "linear", inputs, {"dw": dw, "db": db}, {"dw": expected["dw"], "db": expected["db"]}, dtype)



# (module of fastnn.kernels.jit, op, its inputs): one case of each kernel that cuts the batch.
CHUNKED_KERNELS = {
    "direct conv2d": ("conv2d", "conv2d", dict(pad=1)),
    "fused conv2d_maxpool2d": ("fused", "conv2d_maxpool2d", dict(channels=2)),
    "phase planes": ("phases", "conv2d_maxpool2d", dict(channels=1)),
    "winograd conv2d": ("winograd", "conv2d", dict(channels=16, pad=1)),
    "winograd conv2d_maxpool2d": ("winograd", "conv2d_maxpool2d", dict(channels=16)),
    "narrow linear": ("linear", "linear", {}),
}


@pytest.mark.parametrize("kernel", CHUNKED_KERNELS)
def test_jit_backward_cuts_the_batch_as_its_forward_did(monkeypatch, kernel):
    """The forward pass keeps the number of slices it cut the batch into, and the backward pass
    cuts it the same way (dw's sums then do not depend on a change of thread count in between):
    three slices forward, and a backward that asks for the count again fails."""
    from fastnn.kernels import jit
    module_name, op, options = CHUNKED_KERNELS[kernel]
    module = getattr(jit, module_name)
    rng = np.random.default_rng(5)
    if op == "linear":
        monkeypatch.setattr(jit.linear, "PARALLEL_D", 1)
        inputs = {"x": rng.standard_normal((7, 6)), "w": rng.standard_normal((6, 4)), "b": rng.standard_normal(4)}
    else:
        C = options.get("channels", 2)
        inputs = {"x": rng.standard_normal((7, C, 8, 9)), "w": rng.standard_normal((3, C, 3, 3)),
                  "b": rng.standard_normal(3), "pad": options.get("pad", 0)}
    ops = kernels.get("jit")
    monkeypatch.setattr(module, "batch_chunks", lambda N: min(N, 3))
    y, cache = getattr(ops, f"{op}_forward")(**inputs)
    monkeypatch.setattr(module, "batch_chunks", lambda N: pytest.fail("backward asked for the slice count"))
    dy = rng.standard_normal(y.shape)
    got = dict(zip(("dx", "dw", "db"), getattr(ops, f"{op}_backward")(dy, cache)))
    reference = kernels.get("reference")
    want_y, want_cache = getattr(reference, f"{op}_forward")(**inputs)
    want = dict(zip(("dx", "dw", "db"), getattr(reference, f"{op}_backward")(dy, want_cache)))
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)

def phase_3x3_case(seed, dtype):
    """(inputs, dy) for a conv2d_maxpool2d that the jit backend does by phase planes with the
    3 x 3 kernels' own loops (jit/phases.py: one input channel, 3 x 3 kernels, 2 x 2 windows at
    stride 2): odd and even sizes from the smallest that has a window (with padding 2, images of
    no rows or columns), batches of 1 to 6, 1 to 11 filters (not only multiples of 4), padding 0
    to 2, a ReLU or not, non-contiguous inputs."""
    rng = np.random.default_rng([seed, 1352])
    N, F = rng.integers(1, 7), rng.integers(1, 12)
    pad = int(rng.integers(0, 3))
    H, W = rng.integers(4 - 2 * pad, 18, size=2)  # the convolution's output 2 x 2 or larger
    inputs = {"x": kernel_cases.relayout(rng, rng.standard_normal((N, 1, H, W)).astype(dtype)),
              "w": kernel_cases.relayout(rng, rng.standard_normal((F, 1, 3, 3)).astype(dtype)),
              "b": rng.standard_normal(F).astype(dtype), "stride": 1, "pad": pad,
              "size": 2, "pool_stride": None if rng.random() < 0.5 else 2, "relu": bool(rng.random() < 0.5)}
    return inputs, kernel_cases.draw_dy(rng, "conv2d_maxpool2d", inputs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(40), ids=lambda seed: f"case{seed}")
def test_jit_phase_planes_3x3_kernels_match_reference(seed, dtype):
    """The 3 x 3 kernels' forward loop (``_correlate_pool_3x3``) and weight gradient loop
    (``_weight_grad_3x3``), with dx (then also the general scatter) and without; inference."""
    from fastnn.kernels.jit import phases
    inputs, dy = phase_3x3_case(seed, dtype)
    assert phases._takes_3x3_windows(3, 3, inputs["size"], inputs["pool_stride"] or inputs["size"])
    ops = kernels.get("jit")
    _, cache = ops.conv2d_maxpool2d_forward(**inputs)
    assert cache[0] is phases, "the case must take the phase planes' path"
    op = "conv2d_maxpool2d"
    expected = kernel_cases.run(kernels.get("reference"), op, inputs, dy)
    assert_matches("jit", op, inputs, kernel_cases.run(ops, op, inputs, dy), expected, dtype)
    dx, dw, db = ops.conv2d_maxpool2d_backward(dy, cache, input_grad=False)
    assert dx is None
    assert_matches("jit", op, inputs, {"dw": dw, "db": db}, {"dw": expected["dw"], "db": expected["db"]}, dtype)
    y, cache = ops.conv2d_maxpool2d_forward(**inputs, need_backward=False)
    assert_matches("jit", op, inputs, {"y": y}, {"y": expected["y"]}, dtype)


def winograd_case(op, seed, dtype):
    """(inputs, dy): a stride-1 3 x 3 convolution that the jit backend does by Winograd's method
    (jit/winograd.py: enough input channels, a small plane), for ``conv2d`` or, with a ReLU or not
    and a pooling after it, ``conv2d_maxpool2d``. Odd sizes, batch 1, padding 0 to 4, output
    planes from 1 x 1 to the largest Winograd takes, non-contiguous inputs."""
    from fastnn.kernels.jit import winograd
    rng = np.random.default_rng([seed, 2016])
    N, F = rng.integers(1, 6), rng.integers(1, 10)
    C = winograd.MIN_CHANNELS + int(rng.integers(0, 9))
    pad = int(rng.integers(0, 5))
    H, W = rng.integers(max(1, 3 - 2 * pad), 19 - 2 * pad, size=2)  # output planes 1x1 to 16x16
    inputs = {"x": kernel_cases.relayout(rng, rng.standard_normal((N, C, H, W)).astype(dtype)),
              "w": kernel_cases.relayout(rng, rng.standard_normal((F, C, 3, 3)).astype(dtype)),
              "b": rng.standard_normal(F).astype(dtype), "stride": 1, "pad": pad}
    if op == "conv2d_maxpool2d":
        OH, OW = H + 2 * pad - 2, W + 2 * pad - 2
        inputs.update(size=int(rng.integers(1, min(OH, OW, 3) + 1)), relu=bool(rng.random() < 0.5),
                      pool_stride=None if rng.random() < 0.5 else int(rng.integers(1, 3)))
    return inputs, kernel_cases.draw_dy(rng, op, inputs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(30), ids=lambda seed: f"case{seed}")
@pytest.mark.parametrize("op", ["conv2d", "conv2d_maxpool2d"])
def test_jit_winograd_convolution_matches_reference(monkeypatch, op, seed, dtype):
    from fastnn.kernels.jit import winograd
    if seed % 2:  # every image its own slice of the batch (winograd.BATCH_SLICE_BYTES)
        monkeypatch.setattr(winograd, "BATCH_SLICE_BYTES", 1)
    inputs, dy = winograd_case(op, seed, dtype)
    ops = kernels.get("jit")
    _, cache = getattr(ops, f"{op}_forward")(**inputs)
    assert cache[0] is winograd, "the case must take the Winograd path"
    expected = kernel_cases.run(kernels.get("reference"), op, inputs, dy)
    assert_matches("jit", op, inputs, kernel_cases.run(ops, op, inputs, dy), expected, dtype)
    dx, dw, db = getattr(ops, f"{op}_backward")(dy, cache, input_grad=False)
    assert dx is None
    assert_matches("jit", op, inputs, {"dw": dw, "db": db}, {"dw": expected["dw"], "db": expected["db"]}, dtype)
    if op == "conv2d_maxpool2d":  # inference: the same output, nothing kept for a backward pass
        y, cache = ops.conv2d_maxpool2d_forward(**inputs, need_backward=False)
        assert_matches("jit", op, inputs, {"y": y}, {"y": expected["y"]}, dtype)
        with pytest.raises(ValueError, match="need_backward=False"):
            ops.conv2d_maxpool2d_backward(dy, cache)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slice_images", [1, 2, 8], ids=lambda n: f"{n}-image-slices")
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
@pytest.mark.parametrize("op", ["conv2d", "conv2d_maxpool2d"])
def test_jit_winograd_matches_reference_whatever_the_batch_is_cut_into(monkeypatch, op, parts, slice_images, dtype):
    """Eleven images cut into 1, 2, 3 or 7 parts, one per thread (parts of one to eleven images,
    more threads than this machine has cores), each part in slices of one image, of two (and a
    shorter last one) or in one slice: the reference's results (jit/winograd.py sums each part's
    dw and db, then the parts), and in inference the same output."""
    from fastnn.kernels.jit import winograd
    rng = np.random.default_rng(parts)
    N, C, H, W, F = 11, 17, 9, 8, 6
    monkeypatch.setattr(winograd, "batch_chunks", lambda N: min(N, parts))
    tiles = ((H + 1) // 2) * ((W + 1) // 2)  # pad 1: the output is H x W
    monkeypatch.setattr(winograd, "BATCH_SLICE_BYTES", slice_images * 16 * tiles * C * np.dtype(dtype).itemsize)
    inputs = {"x": rng.standard_normal((N, C, H, W)).astype(dtype), "w": rng.standard_normal((F, C, 3, 3)).astype(dtype),
              "b": rng.standard_normal(F).astype(dtype), "stride": 1, "pad": 1}
    if op == "conv2d_maxpool2d":
        inputs.update(size=2, relu=True, pool_stride=None)
    dy = kernel_cases.draw_dy(rng, op, inputs)
    ops = kernels.get("jit")
    assert getattr(ops, f"{op}_forward")(**inputs)[1][0] is winograd, "the case must take the Winograd path"
    expected = kernel_cases.run(kernels.get("reference"), op, inputs, dy)
    assert_matches("jit", op, inputs, kernel_cases.run(ops, op, inputs, dy), expected, dtype)
    if op == "conv2d_maxpool2d":
        y, _ = ops.conv2d_maxpool2d_forward(**inputs, need_backward=False)
        assert_matches("jit", op, inputs, {"y": y}, {"y": expected["y"]}, dtype)


def test_jit_winograd_calls_interleaved_give_the_results_of_calls_alone():
    """Two Winograd convolutions of different sizes, forward A, forward B (inference C between),
    backward B, backward A, as a network runs them: the same results as each layer alone (the
    path reuses per-thread scratch arrays from call to call, jit/winograd.py)."""
    from fastnn.kernels.jit import winograd
    ops = kernels.get("jit")
    rng = np.random.default_rng(5)
    layers = [{"x": rng.standard_normal((3, 16, 9, 7)), "w": rng.standard_normal((5, 16, 3, 3)),
               "b": rng.standard_normal(5), "pad": 1},
              {"x": rng.standard_normal((2, 20, 12, 12)), "w": rng.standard_normal((8, 20, 3, 3)),
               "b": rng.standard_normal(8), "pad": 0}]
    alone = []
    for layer in layers:
        y, cache = ops.conv2d_forward(**layer)
        assert cache[0] is winograd
        dy = np.cos(np.arange(y.size)).reshape(y.shape)
        alone.append((y, dy, *ops.conv2d_backward(dy, cache)))
    (ya, cache_a), (yb, cache_b) = ops.conv2d_forward(**layers[0]), ops.conv2d_forward(**layers[1])
    ops.conv2d_maxpool2d_forward(**layers[1], size=2, need_backward=False)
    grads_b = ops.conv2d_backward(alone[1][1], cache_b)
    grads_a = ops.conv2d_backward(alone[0][1], cache_a)
    for got, want in zip((ya, *grads_a), alone[0][:1] + alone[0][2:]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip((yb, *grads_b), alone[1][:1] + alone[1][2:]):
        np.testing.assert_array_equal(got, want)


# --- optimizer updates (in place) ---------------------------------------------------------------

def optimizer_update_cases():
    """(shape, dtype, options) for the jit-vs-reference update checks: odd sizes, one element, a
    size the two threads split unevenly, every rule option."""
    shapes = [(1,), (7,), (3, 5), (784, 513), (2, 3, 3, 3)]
    options = [dict(kind="sgd", momentum=0.0), dict(kind="sgd", momentum=0.9),
               dict(kind="sgd", momentum=0.9, nesterov=True, weight_decay=0.01),
               dict(kind="adam"), dict(kind="adam", weight_decay=0.01),
               dict(kind="adam", weight_decay=0.01, decoupled_weight_decay=True)]
    return [(shape, dtype, option) for shape in shapes for dtype in ("float32", "float64") for option in options]


def three_steps(ops, shape, dtype, option, transpose=False):
    """w and the state after three updates by ``ops`` from one random start and gradients."""
    rng = np.random.default_rng(sum(shape))
    w = rng.standard_normal(shape).astype(dtype)
    w = w.T.copy().T if transpose else w   # transpose: a parameter that is not C-contiguous
    state = [np.zeros_like(w), np.zeros_like(w)]
    option = dict(option)
    kind = option.pop("kind")
    for step in range(1, 4):
        grad = rng.standard_normal(shape).astype(dtype)
        if kind == "sgd":
            ops.sgd_update(w, grad, state[0], 0.05, first=step == 1, **option)
        else:
            ops.adam_update(w, grad, state[0], state[1], step, 0.05, **option)
    return w, state


@pytest.mark.parametrize("shape, dtype, option", optimizer_update_cases(), ids=str)
def test_jit_optimizer_updates_match_the_reference_exactly(shape, dtype, option):
    """The same float operations in the same order: the same bits."""
    got = three_steps(kernels.get("jit"), shape, dtype, option)
    want = three_steps(kernels.get("reference"), shape, dtype, option)
    assert got[0].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("option", [dict(kind="sgd", momentum=0.9), dict(kind="adam")], ids=str)
def test_jit_optimizer_updates_a_parameter_that_is_not_contiguous_in_place(option):
    got = three_steps(kernels.get("jit"), (5, 4), "float32", option, transpose=True)
    want = three_steps(kernels.get("reference"), (5, 4), "float32", option)
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_jit_optimizer_updates_flush_subnormal_state_like_the_reference(kind, dtype):
    """State values around the smallest normal number, zero gradients for some entries: the same
    values become zero in both backends, bit for bit."""
    tiny = np.finfo(dtype).tiny
    rng = np.random.default_rng(7)
    results = {}
    for backend in ("jit", "reference"):
        ops = kernels.get(backend)
        w = rng.standard_normal(1000).astype(dtype)
        grad = np.where(np.arange(1000) % 2 == 0, 0, tiny * rng.uniform(-1, 1, 1000)).astype(dtype)
        state = [(tiny * rng.uniform(0.2, 3, 1000) * rng.choice([-1, 1], 1000)).astype(dtype),
                 (tiny * rng.uniform(0.2, 3, 1000)).astype(dtype)]
        for step in range(1, 4):
            if kind == "sgd":
                ops.sgd_update(w, grad, state[0], 0.05, momentum=0.9)
            else:
                ops.adam_update(w, grad, state[0], state[1], step, 0.05)
        results[backend] = (w, state)
        rng = np.random.default_rng(7)
    (w, state), (want_w, want_state) = results["jit"], results["reference"]
    np.testing.assert_array_equal(w, want_w)
    np.testing.assert_array_equal(state[0], want_state[0])
    np.testing.assert_array_equal(state[1], want_state[1])
    assert np.count_nonzero(state[0] == 0) > 100  # the flush happened


MASK_CASES = [((1,), 0.5, 0), ((7,), 0.3, 1), ((3, 5), 0.0, 2**64 - 1), ((2, 3, 4, 5), 0.9, 99),
              ((33, 17), 0.5, 2**63), ((0, 4), 0.5, 3), ((20000,), 0.123, 31337)]


@pytest.mark.parametrize("backend", ["vectorized", "jit"])
@pytest.mark.parametrize("shape, p, seed", MASK_CASES, ids=str)
def test_dropout_mask_is_the_references_bit_for_bit(backend, shape, p, seed):
    """Long enough (20,000) to cross the vectorized backend's chunks; seeds at both ends of the
    64-bit range, where the state wraps."""
    got = kernels.get(backend).dropout_mask(shape, p, seed)
    want = kernels.get("reference").dropout_mask(shape, p, seed)
    assert got.dtype == np.bool_ and got.shape == shape
    assert np.array_equal(got, want)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_drops_a_fraction_p_independently(p):
    """One million draws: the dropped fraction within 5 standard deviations of p, and a pair of
    neighbours (flat order and across rows) dropped together as often as independence says."""
    mask = kernels.get("jit").dropout_mask((1000, 1000), p, 2024)
    n = mask.size
    dropped = ~mask
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    for a, b in ((dropped[:, :-1], dropped[:, 1:]), (dropped[:-1], dropped[1:])):
        both = (a & b).mean()
        assert abs(both - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / a.size)
