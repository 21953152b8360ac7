"""The reference backend is the specification, so it is checked against independent arithmetic:
every gradient against centred finite differences in float64, every forward pass against a
formula written differently (or worked out by hand)."""
import numpy as np
import pytest

import kernel_cases
from fastnn import kernels

ref = kernels.get("reference")

FD_SEEDS = range(20)
FD_STEP = 1e-6
# Centred differences with step h are off by ~h**2 * f''' (1e-12) plus rounding ~eps64 * |f| / h
# (~1e-9 for |f| up to 10): 1e-6 leaves a margin, yet any wrong term is off by O(0.01) or more.
FD_RTOL, FD_ATOL = 1e-5, 1e-6


def scalar_objective(op, inputs, dy):
    """f(inputs) = <forward output, dy>, whose gradient backward(dy) must return."""
    y = getattr(ref, f"{op}_forward")(**inputs)[0]
    return float(np.sum(y * dy))


def numerical_gradient(op, inputs, dy, name):
    """Centred finite differences of scalar_objective with respect to every entry of inputs[name]."""
    inputs = dict(inputs)
    a = inputs[name] = inputs[name].copy()
    grad = np.empty(a.shape)
    for index in np.ndindex(a.shape):
        original = a[index]
        a[index] = original + FD_STEP
        f_plus = scalar_objective(op, inputs, dy)
        a[index] = original - FD_STEP
        f_minus = scalar_objective(op, inputs, dy)
        a[index] = original
        grad[index] = (f_plus - f_minus) / (2 * FD_STEP)
    return grad


@pytest.mark.parametrize("seed", FD_SEEDS, ids=lambda seed: f"case{seed}")
@pytest.mark.parametrize("op", kernel_cases.OPS)
def test_gradients_match_finite_differences(op, seed):
    inputs, dy = kernel_cases.case(op, seed, np.float64, small=True)
    results = kernel_cases.run(ref, op, inputs, dy)
    for name in kernel_cases.GRADIENTS[op]:
        np.testing.assert_allclose(
            results["d" + name], numerical_gradient(op, inputs, dy, name), rtol=FD_RTOL, atol=FD_ATOL,
            err_msg=f"d{name} of {op} on {kernel_cases.describe(inputs)}")


# --- forward passes against independent formulas -------------------------------------------

def conv2d_by_kernel_offsets(x, w, b, stride, pad):
    """Convolution as a sum over the KH*KW kernel offsets of strided slices (not a window loop)."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = (H + 2 * pad - KH) // stride + 1
    OW = (W + 2 * pad - KW) // stride + 1
    xpad = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    xpad[:, :, pad:pad + H, pad:pad + W] = x
    y = np.zeros((N, F, OH, OW)) + b[:, None, None]
    for p in range(KH):
        for q in range(KW):
            patch = xpad[:, :, p:p + stride * OH:stride, q:q + stride * OW:stride]
            y += np.einsum("nchw,fc->nfhw", patch, w[:, :, p, q])
    return y


def maxpool2d_by_window_view(x, size, stride):
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(2, 3))
    return windows[:, :, ::stride, ::stride].max(axis=(4, 5))


@pytest.mark.parametrize("seed", range(20))
def test_conv2d_forward_matches_sum_over_kernel_offsets(seed):
    inputs, _ = kernel_cases.case("conv2d", seed, np.float64)
    y, _ = ref.conv2d_forward(**inputs)
    np.testing.assert_allclose(y, conv2d_by_kernel_offsets(**inputs), rtol=1e-12, atol=1e-12)


def test_conv2d_is_cross_correlation_with_stride():
    # w picks x[2i, 2j] - x[2i+1, 2j+1]; on x = arange that is always -5 (the kernel is not flipped).
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    y, _ = ref.conv2d_forward(x, w, np.array([0.5]), stride=2)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), -4.5))


def test_conv2d_pads_with_zeros():
    # A 3x3 window of ones over a 2x2 image of ones padded by 1 always covers the 4 ones.
    y, _ = ref.conv2d_forward(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), np.zeros(1), pad=1)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 4.0))


@pytest.mark.parametrize("seed", range(20))
def test_maxpool2d_forward_matches_window_view(seed):
    inputs, _ = kernel_cases.case("maxpool2d", seed, np.float64)
    y, _ = ref.maxpool2d_forward(**inputs)
    size = inputs["size"]
    np.testing.assert_array_equal(y, maxpool2d_by_window_view(inputs["x"], size, inputs["stride"] or size))


@pytest.mark.parametrize("seed", range(10))
def test_linear_forward_is_affine(seed):
    inputs, _ = kernel_cases.case("linear", seed, np.float64)
    y, _ = ref.linear_forward(**inputs)
    np.testing.assert_allclose(y, inputs["x"] @ inputs["w"] + inputs["b"], rtol=1e-12, atol=1e-12)


def test_relu_and_dropout_by_hand():
    x = np.array([[-2.0, -0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ref.relu_forward(x)[0], [[0.0, 0.0, 0.0, 3.0]])
    mask = np.array([[True, False, True, True]])
    y, cache = ref.dropout_forward(x, mask, p=0.75)
    np.testing.assert_array_equal(y, [[-8.0, 0.0, 0.0, 12.0]])
    np.testing.assert_array_equal(ref.dropout_backward(np.ones((1, 4)), cache), [[4.0, 0.0, 4.0, 4.0]])


@pytest.mark.parametrize("seed", range(10))
def test_softmax_cross_entropy_forward_is_naive_formula(seed):
    # Moderate logits, so the naive -log(exp(z_y) / sum(exp(z))) is accurate enough to compare.
    inputs, _ = kernel_cases.case("softmax_cross_entropy", seed, np.float64)
    logits, labels = inputs["logits"], inputs["labels"]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    loss, _ = ref.softmax_cross_entropy_forward(logits, labels)
    assert loss.shape == ()
    np.testing.assert_allclose(loss, expected, rtol=1e-12)


def test_softmax_cross_entropy_by_hand():
    # Equal logits over K = 4 classes: p = 1/4 each, loss = log 4, gradient (1/4 - onehot) / N.
    loss, cache = ref.softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([1, 3]))
    np.testing.assert_allclose(loss, np.log(4.0), rtol=1e-15)
    expected = np.full((2, 4), 0.25)
    expected[0, 1] = expected[1, 3] = -0.75
    np.testing.assert_allclose(ref.softmax_cross_entropy_backward(3.0, cache), 3.0 * expected / 2, rtol=1e-15)


@pytest.mark.parametrize("seed", range(20))
def test_batchnorm_forward_and_running_stats_follow_pytorch(seed):
    inputs, _ = kernel_cases.case("batchnorm", seed, np.float64)
    x, gamma, beta = inputs["x"], inputs["gamma"], inputs["beta"]
    m, eps = inputs["momentum"], inputs["eps"]
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if inputs["training"]:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        expected_running_mean = (1 - m) * inputs["running_mean"] + m * mean
        expected_running_var = (1 - m) * inputs["running_var"] + m * x.var(axis=axes, ddof=1)
    else:
        mean, var = inputs["running_mean"], inputs["running_var"]
        expected_running_mean, expected_running_var = mean, var
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    expected_y = gamma.reshape(shape) * xhat + beta.reshape(shape)
    y, _, running_mean, running_var = ref.batchnorm_forward(**inputs)
    np.testing.assert_allclose(y, expected_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(running_mean, expected_running_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(running_var, expected_running_var, rtol=1e-12)


# -- dropout's keep-mask -------------------------------------------------------------------------

# The first four outputs of SplitMix64 started from 0, as published with Vigna's splitmix64.c
# (prng.di.unimi.it) and quoted by many independent implementations.
SPLITMIX64_FROM_ZERO = (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC)


@pytest.mark.parametrize("i, output", list(enumerate(SPLITMIX64_FROM_ZERO)))
def test_dropout_mask_element_i_compares_the_top_half_of_splitmix64_output_i(i, output):
    """With the drop threshold set exactly at element i's 32-bit draw the element is kept, one
    above it dropped: that pins the draw to the published generator, bit for bit."""
    draw = output >> 32
    assert ref.dropout_mask((4,), draw / 2**32, 0)[i]
    assert not ref.dropout_mask((4,), (draw + 1) / 2**32, 0)[i]


def test_dropout_mask_follows_c_order_and_the_seed():
    flat = ref.dropout_mask((24,), 0.5, 12345)
    assert np.array_equal(ref.dropout_mask((2, 3, 4), 0.5, 12345), flat.reshape(2, 3, 4))
    assert not np.array_equal(ref.dropout_mask((24,), 0.5, 12346), flat)
    assert ref.dropout_mask((3, 5), 0.0, 7).all()          # threshold 0: nothing is below it
    assert ref.dropout_mask((0, 5), 0.5, 7).shape == (0, 5)
