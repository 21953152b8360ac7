"""The kernel contract of DESIGN.md, checked in every backend of the registry: the registry
itself, conventions at the edges (max-pool ties, extreme logits, constant batch-norm channels,
ReLU at 0), purity, dtypes, and the ValueError raised for bad input."""
import importlib
import re

import numpy as np
import pytest

import kernel_cases
from fastnn import kernels

BACKENDS = kernels.BACKENDS
DTYPES = (np.float32, np.float64)
JIT_OWN_OPS = ("conv2d", "maxpool2d", "softmax_cross_entropy")  # the heart of the project: never a fallback


# --- registry ---------------------------------------------------------------------------------

def test_registry_lists_backends_and_ops():
    assert BACKENDS == ("reference", "vectorized", "jit")
    for backend in BACKENDS:
        namespace = kernels.get(backend)
        for op in kernels.OPS:
            assert callable(getattr(namespace, op)), f"{backend} lacks {op}"


@pytest.mark.parametrize("backend", ["reference", "vectorized"])
def test_reference_and_vectorized_serve_every_op_themselves(backend):
    for op in kernels.OPS:
        assert kernels.provider(backend, op) == backend


@pytest.mark.parametrize("op", JIT_OWN_OPS)
def test_jit_serves_its_core_ops_itself(op):
    assert kernels.provider("jit", f"{op}_forward") == "jit"
    assert kernels.provider("jit", f"{op}_backward") == "jit"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", kernel_cases.OPS)
def test_forward_and_backward_come_from_one_backend(backend, op):
    # The cache is private to the backend that made it, so the pair must not be split.
    forward_provider = kernels.provider(backend, f"{op}_forward")
    assert kernels.provider(backend, f"{op}_backward") == forward_provider
    if backend == "jit":
        assert forward_provider in ("jit", "vectorized")
    module = importlib.import_module(f"fastnn.kernels.{forward_provider}")
    assert getattr(kernels.get(backend), f"{op}_forward") is getattr(module, f"{op}_forward")


def test_unknown_backend_and_op_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="'cuda'"):
        kernels.get("cuda")
    with pytest.raises(ValueError, match="'cuda'"):
        kernels.provider("cuda", "relu_forward")
    with pytest.raises(ValueError, match="'gelu_forward'"):
        kernels.provider("reference", "gelu_forward")


# --- max-pool ties ----------------------------------------------------------------------------

def first_maximum_gradient(x, dy, size, stride):
    """dx of max-pooling: each window's gradient at the first index holding the window's maximum."""
    dx = np.zeros(x.shape)
    for n, c, i, j in np.ndindex(dy.shape):
        window = x[n, c, i * stride:i * stride + size, j * stride:j * stride + size]
        first = np.flatnonzero(window == window.max())[0]
        dx[n, c, i * stride + first // size, j * stride + first % size] += dy[n, c, i, j]
    return dx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_maxpool_tie_goes_to_first_maximum_by_hand(backend, dtype):
    ops = kernels.get(backend)
    # Windows (size 2): [[1, 3], [3, 2]] -> first 3 at (0, 1); [[3, 0], [0, 0]] -> (0, 2);
    # [[0, 0], [0, 0]] -> its top-left corner (0, 4).
    x = np.array([[[[1, 3, 3, 0, 0, 0], [3, 2, 0, 0, 0, 0]]]], dtype=dtype)
    y, cache = ops.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(y, [[[[3, 3, 0]]]])
    dx = ops.maxpool2d_backward(np.array([[[[10, 20, 30]]]], dtype=dtype), cache)
    np.testing.assert_array_equal(dx, [[[[0, 10, 20, 0, 30, 0], [0, 0, 0, 0, 0, 0]]]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_maxpool_overlapping_windows_on_constant_input(backend, dtype):
    # Every 3x3 window (stride 1) of a constant image ties everywhere: each sends its gradient to its
    # own top-left corner, so dx is dy placed in the top-left OH x OW block.
    ops = kernels.get(backend)
    x = np.full((1, 2, 4, 5), -1.5, dtype=dtype)
    dy = np.arange(1, 13, dtype=dtype).reshape(1, 2, 2, 3)
    y, cache = ops.maxpool2d_forward(x, 3, 1)
    dx = ops.maxpool2d_backward(dy, cache)
    expected = np.zeros(x.shape, dtype=dtype)
    expected[:, :, :2, :3] = dy
    np.testing.assert_array_equal(y, np.full(dy.shape, -1.5))
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("size, stride", [(2, None), (3, 2), (2, 1), (3, 3), (4, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_maxpool_tie_goes_to_first_maximum_random(backend, dtype, size, stride):
    rng = np.random.default_rng(size * 10 + (stride or 0))
    x = rng.integers(0, 3, size=(2, 3, 9, 10)).astype(dtype)  # three values: ties everywhere
    ops = kernels.get(backend)
    y, cache = ops.maxpool2d_forward(x, size, stride)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ops.maxpool2d_backward(dy, cache)
    np.testing.assert_allclose(dx, first_maximum_gradient(x, dy, size, stride or size), rtol=1e-6, atol=1e-6)


def first_maximum_or_nan_gradient(x, dy, size, stride):
    """dx of max-pooling when NaN counts as larger than any number: each window's gradient at its
    first NaN, or, without one, at its first maximum."""
    dx = np.zeros(x.shape)
    for n, c, i, j in np.ndindex(dy.shape):
        window = x[n, c, i * stride:i * stride + size, j * stride:j * stride + size].ravel()
        nans = np.flatnonzero(np.isnan(window))
        first = nans[0] if len(nans) else np.flatnonzero(window == window.max())[0]
        dx[n, c, i * stride + first // size, j * stride + first % size] += dy[n, c, i, j]
    return dx


@pytest.mark.parametrize("size", [11, 12])
def test_jit_phase_planes_take_windows_whose_phases_fit_an_int8(size):
    """jit/phases.py numbers a window's phases in an int8: windows up to 11 x 11 (121 phases) go
    by phase planes, larger ones by the direct method; both give the reference's results."""
    from fastnn.kernels.jit import phases
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 1, 15, 16))
    w, b = rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    ops, reference = kernels.get("jit"), kernels.get("reference")
    y, cache = ops.conv2d_maxpool2d_forward(x, w, b, pad=1, size=size, pool_stride=2)
    assert cache[0] is (phases if size == 11 else None)
    expected_y, expected_cache = reference.conv2d_maxpool2d_forward(x, w, b, pad=1, size=size, pool_stride=2)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-12)
    for got, want in zip(ops.conv2d_maxpool2d_backward(dy, cache), reference.conv2d_maxpool2d_backward(dy, expected_cache)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("shape", [(2, 1, 8, 10), (1, 1, 7, 9)], ids=str)
def test_jit_phase_planes_3x3_pooling_routes_ties_and_nan_as_the_reference(shape, pad, relu, dtype):
    """The 3 x 3 kernels' own loops in jit/phases.py (2 x 2 windows at stride 2): on small
    integers, filters that copy a pixel (exact sums: windows tie, ReLU'd maxima are exactly 0),
    with NaN among them or not: y equal (NaN where the reference has it: its dense sums put NaN
    in the same outputs, 0 * NaN), ties to the first maximum and NaN taking the gradient as in
    the reference (dx, db); dw too where x is finite."""
    from fastnn.kernels.jit import phases
    rng = np.random.default_rng([sum(shape), pad])
    x = rng.integers(-1, 3, size=shape).astype(dtype)
    w = np.zeros((2, 1, 3, 3), dtype)
    w[0, 0, 1, 1] = w[1, 0, 0, 2] = 1
    b = np.zeros(2, dtype)
    options = dict(stride=1, pad=pad, size=2, relu=relu)
    ops, reference = kernels.get("jit"), kernels.get("reference")
    for with_nan in (False, True):
        if with_nan:
            x[rng.random(shape) < 0.05] = np.nan
        y, cache = ops.conv2d_maxpool2d_forward(x, w, b, **options)
        assert cache[0] is phases
        expected_y, expected_cache = reference.conv2d_maxpool2d_forward(x, w, b, **options)
        assert np.isnan(expected_y).any() == with_nan and not np.isnan(expected_y).all()
        np.testing.assert_array_equal(y, expected_y)
        dy = rng.integers(-3, 4, size=y.shape).astype(dtype)  # exact sums in either order
        got = ops.conv2d_maxpool2d_backward(dy, cache)
        expected = reference.conv2d_maxpool2d_backward(dy, expected_cache)
        for name, have, want in zip(("dx", "dw", "db"), got, expected):
            if name != "dw" or not with_nan:
                np.testing.assert_array_equal(have, want, err_msg=name)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("K", [1, 2, 3])
@pytest.mark.parametrize("pad", [0, 1])
def test_jit_phase_copies_read_nothing_outside_the_image(pad, K, size, stride):
    """jit/phases.py's ``_phase_copies`` on images of 3 to 10 rows and columns that are the start of
    a longer buffer of NaN: Q equals its definition (zero outside the padded image), so neither
    the whole-row path nor the clipping one reads a pixel past the image."""
    from fastnn.kernels.jit import phases
    rng = np.random.default_rng([pad, K, size, stride])
    for H, W in rng.integers(3, 11, size=(6, 2)):
        OH, OW = H + 2 * pad - K + 1, W + 2 * pad - K + 1
        if min(OH, OW) < size:
            continue
        PH, PW = (OH - size) // stride + 1, (OW - size) // stride + 1
        classes, rows, B = min(stride, size + K - 1), PH + (size + K - 2) // stride, size + K - 1
        buffer = np.full(3 * H * W, np.nan)
        src = buffer[:H * W].reshape(1, H, W)
        src[:] = rng.standard_normal((1, H, W))
        Q = np.full((1, classes, B, rows * PW), -1.0)
        phases._phase_copies(src, pad, stride, PW, Q)
        padded = np.zeros((stride * rows + classes + H, stride * PW + B + W))
        padded[pad:pad + H, pad:pad + W] = src[0]
        for r in range(classes):
            for b_ in range(B):
                expected = padded[r:r + stride * rows:stride, b_:b_ + stride * PW:stride]
                np.testing.assert_array_equal(Q[0, r, b_].reshape(rows, PW), expected)


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 2, 7, 9)], ids=str)
@pytest.mark.parametrize("size, stride", [(2, None), (3, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["reference", "jit"])
def test_maxpool_nan_wins_its_window_and_takes_the_gradient(backend, dtype, size, stride, shape):
    """A window holding NaN gives NaN, and its gradient goes to its first NaN (ties among the
    numbers as before). The vectorized backend leaves NaN's gradient to NumPy's argmax order."""
    rng = np.random.default_rng(sum(shape) + size)
    x = rng.integers(0, 3, size=shape).astype(dtype)
    x[rng.random(shape) < 0.15] = np.nan
    ops = kernels.get(backend)
    y, cache = ops.maxpool2d_forward(x, size, stride)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ops.maxpool2d_backward(dy, cache)
    stride = stride or size
    expected_y = np.empty(y.shape)
    for n, c, i, j in np.ndindex(y.shape):
        window = x[n, c, i * stride:i * stride + size, j * stride:j * stride + size]
        expected_y[n, c, i, j] = np.nan if np.isnan(window).any() else window.max()
    assert np.isnan(y).any()
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_allclose(dx, first_maximum_or_nan_gradient(x, dy, size, stride), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 1, 8, 10), (1, 1, 7, 9)], ids=str)
@pytest.mark.parametrize("size, stride", [(2, None), (3, 2)])
@pytest.mark.parametrize("backend", ["reference", "jit"])
def test_fused_pooling_breaks_ties_and_routes_nan_as_maxpool_does(backend, size, stride, shape):
    """conv2d_maxpool2d with the 1x1 convolution by 1 is max-pooling of x: ties go to the first
    maximum, NaN wins its window and takes the gradient, in the fused kernel's own pooling too."""
    rng = np.random.default_rng(sum(shape) + size)
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.15] = np.nan
    ops = kernels.get(backend)
    y, cache = ops.conv2d_maxpool2d_forward(x, np.ones((1, 1, 1, 1)), np.zeros(1), size=size, pool_stride=stride)
    dy = rng.standard_normal(y.shape)
    dx, _, _ = ops.conv2d_maxpool2d_backward(dy, cache)
    expected_y, _ = kernels.get("reference").maxpool2d_forward(x, size, stride)
    assert np.isnan(y).any()
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(dx, first_maximum_or_nan_gradient(x, dy, size, stride or size))


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 2, 7, 9)], ids=str)
@pytest.mark.parametrize("size, stride", [(2, 2), (3, 2), (2, 1)])
def test_winograd_pooling_breaks_ties_and_routes_nan_as_maxpool_does(size, stride, shape):
    """The jit Winograd path pools its channels-last output with its own loop; on planes with
    ties and NaN it picks what maxpool2d picks (compared directly: a Winograd convolution moves
    NaN to other pixels than the direct sums do, see jit/winograd.py)."""
    from fastnn.kernels.jit import winograd
    rng = np.random.default_rng(sum(shape) + size + stride)
    z = rng.integers(0, 3, size=shape).astype(np.float64)
    z[rng.random(shape) < 0.15] = np.nan
    expected_y, _ = kernels.get("reference").maxpool2d_forward(z, size, stride)
    N, C, H, W = shape
    y, where = np.empty(expected_y.shape), np.empty(expected_y.shape, np.int32)
    for n in range(N):
        z_last = np.ascontiguousarray(z[n].transpose(1, 2, 0))
        winograd._pool_channels_last(z_last, size, stride, False, y[n], where[n])
    dy = rng.standard_normal(y.shape)
    dz = np.zeros(shape)
    for n, c, i, j in np.ndindex(y.shape):
        dz[n, c, where[n, c, i, j] // W, where[n, c, i, j] % W] += dy[n, c, i, j]
    assert np.isnan(y).any()
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(dz, first_maximum_or_nan_gradient(z, dy, size, stride))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 2, 7, 9)], ids=str)
def test_winograd_tile_windows_pool_as_its_channels_last_pooling_does(shape, relu):
    """2 x 2 pooling with stride 2 straight from the Winograd products (``_tile_windows``, whose
    windows are the output tiles) picks what ``_pool_channels_last`` picks (checked against
    maxpool2d above) on planes with ties, NaN and, through the ReLU, dead windows. The products
    are chosen so that the output transform gives each tile's four pixels exactly: m[0] = z00,
    m[3] = -z01, m[12] = -z10, m[15] = z11 and zeros (A^T m A adds each to one pixel only)."""
    from fastnn.kernels.jit import winograd
    rng = np.random.default_rng(sum(shape) + relu)
    N, F, OH, OW = shape
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    z = rng.integers(-1, 3, size=shape).astype(np.float64)
    z[rng.random(shape) < 0.15] = np.nan
    tiles = np.zeros((N, F, 2 * TH, 2 * TW))
    tiles[:, :, :OH, :OW] = z
    M = np.zeros((16, N * TH * TW, F))
    for k, sign, dh, dw in ((0, 1, 0, 0), (3, -1, 0, 1), (12, -1, 1, 0), (15, 1, 1, 1)):
        M[k] = sign * tiles[:, :, dh::2, dw::2].transpose(0, 2, 3, 1).reshape(N * TH * TW, F)
    b = np.zeros(F)
    PH, PW = OH // 2, OW // 2
    y, where = np.empty((N, F, PH, PW)), np.empty((N, F, PH, PW), np.int32)
    want_y, want_where = np.empty_like(y), np.empty_like(where)
    for n in range(N):
        winograd._tile_windows(M, n * TH * TW, b, OW, relu, y[n], where[n])
        z_last = np.ascontiguousarray(z[n].transpose(1, 2, 0))
        winograd._pool_channels_last(z_last, 2, 2, relu, want_y[n], want_where[n])
    assert np.isnan(y).any() and (not relu or (where == -1).any())
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(where, want_where)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("size, stride", [(2, None), (3, 2), (1, 1), (2, 3)])
@pytest.mark.parametrize("shape, pad", [((2, 16, 8, 10), 1), ((1, 17, 7, 9), 0), ((1, 16, 1, 1), 1),
                                        ((2, 4, 8, 10), 1), ((1, 5, 7, 9), 0),
                                        ((2, 1, 8, 10), 1), ((1, 1, 7, 9), 0)], ids=str)
def test_jit_fused_pooling_breaks_ties_and_kills_dead_windows_as_the_reference(shape, pad, size, stride, relu):
    """Through the jit conv2d_maxpool2d on each of its paths (Winograd from 16 channels, phase
    planes for one, the direct method between): filters that copy a channel (exact in
    Winograd's arithmetic too) on small integers, so that windows tie and ReLU'd maxima are
    exactly 0; y equal, and the gradients to the same pixels."""
    from fastnn.kernels.jit import phases, winograd
    rng = np.random.default_rng(sum(shape) + size + pad)
    x = rng.integers(-1, 3, size=shape).astype(np.float64)
    w = np.zeros((2, shape[1], 3, 3))
    w[0, 0, 1, 1] = w[1, min(3, shape[1] - 1), 1, 1] = 1
    b = np.zeros(2)
    OH, OW = shape[2] + 2 * pad - 2, shape[3] + 2 * pad - 2
    if size > min(OH, OW):
        size = stride = 1
    options = dict(stride=1, pad=pad, size=size, pool_stride=stride, relu=relu)
    ops, reference = kernels.get("jit"), kernels.get("reference")
    y, cache = ops.conv2d_maxpool2d_forward(x, w, b, **options)
    assert cache[0] is (winograd if shape[1] >= winograd.MIN_CHANNELS else phases if shape[1] == 1 else None)
    expected_y, expected_cache = reference.conv2d_maxpool2d_forward(x, w, b, **options)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = ops.conv2d_maxpool2d_backward(dy, cache)
    expected = reference.conv2d_maxpool2d_backward(dy, expected_cache)
    np.testing.assert_array_equal(y, expected_y)
    for got, want in zip((dx, dw, db), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# --- softmax cross-entropy at extreme logits ---------------------------------------------------

# (logits, labels, loss, softmax) worked out by hand: exp(-1e4) and exp(-2e8) are 0 in floating point.
EXTREME_LOGITS = {
    "plus-minus-1e4": ([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], [0, 0], (0.0 + 2e4) / 2,
                       [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "1e8": ([[1e8, 1e8, -1e8], [-1e8, 1e8, 1e8]], [1, 0], (np.log(2) + 2e8) / 2,
            [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]),
    "all-equal": ([[7.0] * 4, [-7.0] * 4, [0.0] * 4], [3, 0, 1], np.log(4), [[0.25] * 4] * 3),
}


@pytest.mark.parametrize("dloss_kind", ["float", "0-d array"])
@pytest.mark.parametrize("case", EXTREME_LOGITS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_cross_entropy_extreme_logits(backend, dtype, case, dloss_kind):
    logits, labels, expected_loss, softmax = EXTREME_LOGITS[case]
    logits, labels, softmax = np.array(logits, dtype=dtype), np.array(labels), np.array(softmax)
    N = len(labels)
    dloss = 2.0 if dloss_kind == "float" else np.asarray(2.0, dtype=dtype)
    ops = kernels.get(backend)
    loss, cache = ops.softmax_cross_entropy_forward(logits, labels)
    dlogits = ops.softmax_cross_entropy_backward(dloss, cache)
    onehot = np.eye(logits.shape[1])[labels]
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(dlogits, 2.0 * (softmax - onehot) / N, rtol=1e-6, atol=1e-7)


# --- batch norm edge cases ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 3, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_constant_channel(backend, dtype, shape):
    # Channel 1 is constant: mean = 3, var = 0, so x - mean = 0 and y = beta = 0 there; the gradient
    # is finite and (with xhat = 0) reduces to gamma / sqrt(eps) * (dy - mean(dy)).
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    x[:, 1] = 3.0
    gamma = np.array([1.5, -2.0, 0.5], dtype=dtype)
    beta = np.zeros(3, dtype=dtype)
    running_var = np.ones(3, dtype=dtype)
    eps = 1e-5
    ops = kernels.get(backend)
    y, cache, _, new_running_var = ops.batchnorm_forward(x, gamma, beta, np.zeros(3, dtype=dtype), running_var, eps=eps)
    dy = rng.standard_normal(shape).astype(dtype)
    dx, dgamma, dbeta = ops.batchnorm_backward(dy, cache)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_allclose(y[:, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(dx[:, 1], gamma[1] / np.sqrt(eps) * (dy[:, 1] - dy[:, 1].mean()), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dgamma[1], 0.0, atol=1e-5)
    np.testing.assert_allclose(dbeta[1], dy[:, 1].sum(), rtol=1e-5)
    np.testing.assert_allclose(new_running_var[1], 0.9, rtol=1e-6)  # (1 - 0.1) * 1 + 0.1 * 0


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_training_with_one_value_per_channel_raises(backend, shape):
    ops = kernels.get(backend)
    x, ones, zeros = np.ones(shape), np.ones(3), np.zeros(3)
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        ops.batchnorm_forward(x, ones, zeros, zeros, ones, training=True)
    y, *_ = ops.batchnorm_forward(x, ones, zeros, zeros, ones, training=False)  # eval mode is fine
    np.testing.assert_allclose(y, np.ones(shape) / np.sqrt(1 + 1e-5))


# --- ReLU at zero --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_gradient_at_zero_is_zero(backend, dtype):
    # PyTorch's convention: ReLU's gradient at exactly 0 (either sign of zero) is 0.
    ops = kernels.get(backend)
    y, cache = ops.relu_forward(np.array([-1.0, 0.0, -0.0, 2.0], dtype=dtype))
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 2.0])
    np.testing.assert_array_equal(ops.relu_backward(np.full(4, 5.0, dtype=dtype), cache), [0.0, 0.0, 0.0, 5.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_relu_gradient_at_zero_is_zero(backend, dtype):
    # The same convention inside the fused op: x @ w + b is exactly 0, -0.0, -1 and 2.
    ops = kernels.get(backend)
    x, w = np.eye(4, dtype=dtype), np.zeros((4, 4), dtype=dtype)
    b = np.array([0.0, -0.0, -1.0, 2.0], dtype=dtype)
    y, cache = ops.linear_relu_forward(x, w, b)
    np.testing.assert_array_equal(y, np.tile([0.0, 0.0, 0.0, 2.0], (4, 1)))
    _, _, db = ops.linear_relu_backward(np.full((4, 4), 5.0, dtype=dtype), cache)
    np.testing.assert_array_equal(db, [0.0, 0.0, 0.0, 20.0])


# --- purity and dtypes ---------------------------------------------------------------------------

def copies(inputs):
    return {name: value.copy() if isinstance(value, np.ndarray) else value for name, value in inputs.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", kernel_cases.OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_unchanged_and_dtype_kept(backend, op, dtype):
    """No op changes its inputs or returns one of them (batch norm's running statistics in
    evaluation mode come back as new arrays too); every result has the input's dtype."""
    ops = kernels.get(backend)
    for seed in range(5):
        inputs, dy = kernel_cases.case(op, seed, dtype)
        inputs_before, dy_before = copies(inputs), np.copy(dy)
        y, cache, *running = getattr(ops, f"{op}_forward")(**inputs)
        y_before = np.copy(y)
        grads = getattr(ops, f"{op}_backward")(dy, cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        for name, value in inputs.items():
            np.testing.assert_array_equal(value, inputs_before[name], err_msg=f"{op} changed its input {name}")
        np.testing.assert_array_equal(dy, dy_before, err_msg=f"{op} backward changed dy")
        np.testing.assert_array_equal(y, y_before, err_msg=f"{op} backward changed the forward output")
        for result in (y, *running, *grads):
            assert result.dtype == np.dtype(dtype), f"{op}: result dtype {result.dtype} for {np.dtype(dtype)} input"
            shared = [name for name, value in inputs.items()
                      if isinstance(value, np.ndarray) and np.shares_memory(result, value)]
            assert not shared, f"{op}: a result shares memory with its input {shared[0]}"
        if op == "softmax_cross_entropy":
            assert np.ndim(y) == 0


@pytest.mark.parametrize("op", kernel_cases.OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_changing_the_output_before_backward_changes_no_gradient(backend, op):
    """The cache never holds the array forward returned: a caller may change it in place (as
    the loss or a user's code might) and backward still differentiates the forward pass."""
    ops = kernels.get(backend)
    for seed in range(3):
        inputs, dy = kernel_cases.case(op, seed, "float64")
        expected = kernel_cases.run(ops, op, inputs, dy)
        y, cache, *_ = getattr(ops, f"{op}_forward")(**inputs)
        y[...] = 7.0
        grads = getattr(ops, f"{op}_backward")(dy, cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        for name, grad in zip(kernel_cases.GRADIENTS[op], grads, strict=True):
            np.testing.assert_array_equal(grad, expected["d" + name], err_msg=f"{op} d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_relu_backward_rejects_a_dy_of_another_shape(backend):
    ops = kernels.get(backend)
    _, cache = ops.linear_relu_forward(np.ones((10, 3)), np.ones((3, 5)), np.zeros(5))
    with pytest.raises(ValueError, match=r"\(10, ?4\)"):   # NumPy's own message in the reference
        ops.linear_relu_backward(np.ones((10, 4)), cache)



@pytest.mark.parametrize("dy_shape", [(10, 4), (9, 5), (10, 6)])
def test_jit_narrow_linear_backward_rejects_a_dy_of_another_shape(dy_shape):
    """The jit head's loops (F <= 16) would read past a dy of another shape: it is refused."""
    ops = kernels.get("jit")
    _, cache = ops.linear_forward(np.ones((10, 3)), np.ones((3, 5)), np.zeros(5))
    with pytest.raises(ValueError, match=re.escape(f"{dy_shape}")):
        ops.linear_backward(np.ones(dy_shape), cache)

# --- bad input -----------------------------------------------------------------------------------

def zeros(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


# (op, keyword arguments, words the message must contain: argument names and shapes)
BAD_INPUTS = {
    "linear x rank": ("linear", dict(x=zeros(2, 3, 4), w=zeros(3, 5), b=zeros(5)), ["x", "(2, 3, 4)"]),
    "linear features": ("linear", dict(x=zeros(2, 3), w=zeros(4, 5), b=zeros(5)), ["x", "w", "(2, 3)", "(4, 5)"]),
    "linear bias": ("linear", dict(x=zeros(2, 3), w=zeros(3, 5), b=zeros(4)), ["b", "(4,)"]),
    "linear empty batch": ("linear", dict(x=zeros(0, 3), w=zeros(3, 5), b=zeros(5)), ["x", "(0, 3)"]),
    "linear_relu features": ("linear_relu", dict(x=zeros(2, 3), w=zeros(4, 5), b=zeros(5)),
                             ["x", "w", "(2, 3)", "(4, 5)"]),
    "linear_relu integer x": ("linear_relu", dict(x=np.zeros((2, 3), dtype=np.int64), w=zeros(3, 5), b=zeros(5)),
                              ["x", "int64"]),
    "conv2d x rank": ("conv2d", dict(x=zeros(1, 8, 8), w=zeros(2, 1, 3, 3), b=zeros(2)), ["x", "(1, 8, 8)"]),
    "conv2d channels": ("conv2d", dict(x=zeros(1, 2, 8, 8), w=zeros(4, 3, 3, 3), b=zeros(4)),
                        ["x", "w", "(1, 2, 8, 8)", "(4, 3, 3, 3)"]),
    "conv2d empty batch": ("conv2d", dict(x=zeros(0, 1, 8, 8), w=zeros(2, 1, 3, 3), b=zeros(2)), ["x", "(0, 1, 8, 8)"]),
    "conv2d kernel larger than input": ("conv2d", dict(x=zeros(1, 1, 3, 3), w=zeros(1, 1, 5, 5), b=zeros(1)),
                                        ["x", "w", "(1, 1, 3, 3)", "(1, 1, 5, 5)"]),
    "maxpool2d x rank": ("maxpool2d", dict(x=zeros(4, 4)), ["x", "(4, 4)"]),
    "maxpool2d empty batch": ("maxpool2d", dict(x=zeros(0, 1, 4, 4)), ["x", "(0, 1, 4, 4)"]),
    "maxpool2d window larger than input": ("maxpool2d", dict(x=zeros(1, 1, 3, 5), size=4), ["x", "(1, 1, 3, 5)"]),
    "conv2d_maxpool2d window larger than the convolution's output": (
        "conv2d_maxpool2d", dict(x=zeros(1, 1, 5, 5), w=zeros(1, 1, 3, 3), b=zeros(1), size=4), ["4x4", "3x3"]),
    "relu integer x": ("relu", dict(x=np.zeros((2, 2), dtype=np.int64)), ["x", "int64"]),
    "softmax logits rank": ("softmax_cross_entropy", dict(logits=zeros(3), labels=np.zeros(3, int)),
                            ["logits", "(3,)"]),
    "softmax label too large": ("softmax_cross_entropy", dict(logits=zeros(2, 3), labels=np.array([0, 3])),
                                ["labels", "(2, 3)"]),
    "softmax label too large in the last row": (
        "softmax_cross_entropy", dict(logits=zeros(5, 3), labels=np.array([0, 1, 2, 0, 7])), ["labels", "(5, 3)", "7"]),
    "softmax label negative": ("softmax_cross_entropy", dict(logits=zeros(2, 3), labels=np.array([-1, 0])),
                               ["labels", "(2, 3)"]),
    "softmax label count": ("softmax_cross_entropy", dict(logits=zeros(2, 3), labels=np.array([0, 1, 2])),
                            ["labels", "logits", "(2, 3)", "(3,)"]),
    "softmax empty batch": ("softmax_cross_entropy", dict(logits=zeros(0, 3), labels=np.zeros(0, int)),
                            ["logits", "(0, 3)"]),
    "batchnorm x rank": ("batchnorm", dict(x=zeros(4, 3, 2), gamma=zeros(3), beta=zeros(3), running_mean=zeros(3),
                                           running_var=zeros(3)), ["x", "(4, 3, 2)"]),
    "batchnorm gamma channels": ("batchnorm", dict(x=zeros(4, 3), gamma=zeros(2), beta=zeros(3), running_mean=zeros(3),
                                                   running_var=zeros(3)), ["gamma", "(4, 3)", "(2,)"]),
    "batchnorm running_var channels": ("batchnorm", dict(x=zeros(4, 3, 2, 2), gamma=zeros(3), beta=zeros(3),
                                                         running_mean=zeros(3), running_var=zeros(4)),
                                       ["running_var", "(4, 3, 2, 2)", "(4,)"]),
    "batchnorm empty batch": ("batchnorm", dict(x=zeros(0, 3), gamma=zeros(3), beta=zeros(3), running_mean=zeros(3),
                                                running_var=zeros(3)), ["x", "(0, 3)"]),
    "dropout mask shape": ("dropout", dict(x=zeros(2, 3), mask=np.ones((3, 2), bool), p=0.5),
                           ["mask", "(2, 3)", "(3, 2)"]),
    "dropout p": ("dropout", dict(x=zeros(2, 3), mask=np.ones((2, 3), bool), p=1.0), ["p", "1.0"]),
}
BAD_MASK_INPUTS = {
    "negative size": (dict(shape=(2, -1), p=0.5, seed=0), ["shape", "(2, -1)"]),
    "p of 1": (dict(shape=(2, 3), p=1.0, seed=0), ["p", "1.0"]),
    "negative seed": (dict(shape=(2, 3), p=0.5, seed=-1), ["seed", "-1"]),
    "seed too large": (dict(shape=(2, 3), p=0.5, seed=2**64), ["seed", str(2**64)]),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_raises_value_error_naming_it(backend, case):
    op, inputs, words = BAD_INPUTS[case]
    with pytest.raises(ValueError) as raised:
        getattr(kernels.get(backend), f"{op}_forward")(**inputs)
    assert_names(str(raised.value), words)


@pytest.mark.parametrize("case", BAD_MASK_INPUTS, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_dropout_mask_arguments_raise_value_error_naming_them(backend, case):
    inputs, words = BAD_MASK_INPUTS[case]
    with pytest.raises(ValueError) as raised:
        kernels.get(backend).dropout_mask(**inputs)
    assert_names(str(raised.value), words)


def assert_names(message, words):
    """Every word appears in message: names as whole words, shapes verbatim."""
    for word in words:
        assert re.search(rf"(?<!\w){re.escape(word)}(?!\w)", message), f"{word!r} not in message {message!r}"


# --- infinity and NaN -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["vectorized", "jit"])
@pytest.mark.parametrize("op", ["linear", "linear_relu"])
def test_linear_puts_infinity_and_nan_where_the_reference_does(op, backend, dtype):
    """An infinite input or weight makes infinities and NaNs (inf - inf, 0 * inf) in y, dx and
    dw: exactly where the reference makes them (after a ReLU too, which keeps NaN and +inf and
    passes no gradient at either NaN or -inf). Five samples and ten outputs, so that blocked
    loops have missing rows to pad: padding must never multiply an infinity by 0."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 7)).astype(dtype)
    w = rng.standard_normal((7, 10)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype)
    dy = rng.standard_normal((5, 10)).astype(dtype)
    x[4, 2], x[1, 5], w[3, 9], w[6, 0], dy[4, 9] = np.inf, -np.inf, np.inf, -np.inf, 0.0
    results = {}
    for name in ("reference", backend):
        ops = kernels.get(name)
        with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf are the point here
            y, cache = getattr(ops, f"{op}_forward")(x, w, b)
            results[name] = (y, *getattr(ops, f"{op}_backward")(dy, cache))
    y, dx, dw, _ = results["reference"]
    assert all(np.isnan(a).any() and np.isinf(a).any() for a in (y, dx, dw))
    for got, want in zip(results[backend], results["reference"]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["relu", "dropout"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_elementwise_ops_treat_infinity_and_nan_exactly_as_the_reference(op, dtype):
    """ReLU keeps NaN and sends no gradient where x is not > 0, whatever dy holds; dropout keeps
    NaN * 0 = NaN for a dropped NaN. The jit kernels do the reference's arithmetic, so the
    results are identical, non-finite values included. (The vectorized ReLU backward differs
    for a NaN dy where x <= 0: see its docstring.)"""
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, np.nan], dtype=dtype)
    x = np.tile(special, (8, 1))
    dy = np.tile(special, (8, 1)).T.copy()
    results = {}
    for name in ("reference", "jit"):
        ops = kernels.get(name)
        with np.errstate(invalid="ignore"):
            if op == "relu":
                y, cache = ops.relu_forward(x)
                results[name] = (y, ops.relu_backward(dy, cache))
            else:
                mask = np.arange(x.size).reshape(x.shape) % 3 != 0
                y, cache = ops.dropout_forward(x, mask, 0.25)
                results[name] = (y, ops.dropout_backward(dy, cache))
    for got, want in zip(results["jit"], results["reference"]):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", ["relu", "dropout", "linear_relu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_elementwise_gradients_keep_the_inputs_dtype_for_a_wider_dy(backend, op):
    """A float64 dy (a loss computed in double precision, say) for a float32 layer gives a
    float32 gradient, as the reference specifies."""
    ops = kernels.get(backend)
    x = np.array([[-1.0, 2.0, 3.0]], dtype=np.float32)
    if op == "relu":
        y, cache = ops.relu_forward(x)
        dx = ops.relu_backward(np.ones(x.shape), cache)
    elif op == "linear_relu":
        y, cache = ops.linear_relu_forward(x, np.eye(3, dtype=np.float32), np.zeros(3, np.float32))
        dx, dw, db = ops.linear_relu_backward(np.ones(x.shape), cache)
        assert dw.dtype == db.dtype == np.float32
    else:
        y, cache = ops.dropout_forward(x, np.array([[True, False, True]]), 0.5)
        dx = ops.dropout_backward(np.ones(x.shape), cache)
    assert dx.dtype == np.float32
