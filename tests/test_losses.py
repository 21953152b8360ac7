"""fastnn.losses: values and gradients against formulas worked out independently of the kernels."""
import math

import numpy as np
import pytest

import fastnn
from fastnn import losses


def test_cross_entropy_by_hand():
    # Row 0: logits (0, 0) -> softmax (1/2, 1/2), label 0 -> loss log 2.
    # Row 1: logits (log 3, 0) -> softmax (3/4, 1/4), label 1 -> loss log 4.
    logits = np.array([[0.0, 0.0], [math.log(3), 0.0]])
    labels = np.array([0, 1])
    loss = losses.CrossEntropyLoss(backend="reference")(logits, labels)
    assert float(loss) == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert loss.item() == float(loss)
    assert f"{loss:.3f}" == f"{(math.log(2) + math.log(4)) / 2:.3f}"
    # d(mean loss)/d(logits) = (softmax - onehot) / N
    expected = np.array([[0.5 - 1, 0.5], [0.75, 0.25 - 1]]) / 2
    np.testing.assert_allclose(loss.backward(), expected)


@pytest.mark.parametrize("backend", ["reference", "vectorized"])
def test_cross_entropy_keeps_float32_and_follows_the_backend_in_force(backend):
    logits = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    labels = np.arange(6)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    with fastnn.use_backend(backend):
        loss = losses.CrossEntropyLoss()(logits, labels)
    assert float(loss) == pytest.approx(-log_softmax[np.arange(6), labels].mean(), rel=1e-5)
    dlogits = loss.backward()
    assert dlogits.dtype == np.float32 and dlogits.shape == (6, 10)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-6)  # softmax rows sum to 1, onehots too


def test_cross_entropy_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        losses.CrossEntropyLoss(backend="reference")(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        losses.CrossEntropyLoss(backend="gpu")


def test_mse_by_hand():
    output = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    target = np.array([[0.0, 2.0], [5.0, 1.0]], np.float32)
    # differences 1, 0, -2, 3; squares 1, 0, 4, 9; mean 14 / 4
    loss = losses.MSELoss()(output, target)
    assert float(loss) == pytest.approx(3.5)
    grad = loss.backward()
    # 2 * difference / 4 elements
    np.testing.assert_allclose(grad, [[0.5, 0.0], [-1.0, 1.5]])
    assert grad.dtype == np.float32


def test_mse_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    output, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    criterion = losses.MSELoss()
    grad = criterion(output, target).backward()
    h = 1e-6
    for i in np.ndindex(output.shape):
        up, down = output.copy(), output.copy()
        up[i] += h
        down[i] -= h
        numeric = (float(criterion(up, target)) - float(criterion(down, target))) / (2 * h)
        assert grad[i] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_mse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        losses.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
