"""Sequential's fused Conv2d, [ReLU], MaxPool2d steps: the same numbers as the layers one by one,
and ``backward(dy, input_grad=False)`` giving the same parameter gradients without d(input)."""
import numpy as np
import pytest

from fastnn import nn


def cnn(relu, backend):
    rng = np.random.default_rng(3)
    layers = [nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=np.float64, backend=backend)]
    if relu:
        layers.append(nn.ReLU(backend=backend))
    layers += [nn.MaxPool2d(2, backend=backend), nn.Flatten(),
               nn.Linear(4 * 4 * 5, 3, rng=rng, dtype=np.float64, backend=backend)]
    return nn.Sequential(*layers)


def layer_by_layer(model, x, dy):
    """Output, d(input) and parameter gradients, running each layer on its own (never fused)."""
    for layer in model:
        x = layer(x)
    for layer in reversed(list(model)):
        dy = layer.backward(dy)
    return x, dy, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["reference", "vectorized", "jit"])
@pytest.mark.parametrize("relu", [True, False])
def test_fused_sequential_matches_its_layers_one_by_one(backend, relu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 8, 10))
    model = cnn(relu, backend)
    y = model(x)
    dy = rng.standard_normal(y.shape)
    dx = model.backward(dy)
    grads = [p.grad.copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="fused"):
        model[0].backward(np.zeros((3, 4, 8, 10)))   # its gradient comes through the Sequential
    model.zero_grad()
    y_alone, dx_alone, grads_alone = layer_by_layer(model, x, dy)
    np.testing.assert_allclose(y, y_alone, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_alone, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, grads_alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "jit"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8, 10))
    model = cnn(True, backend)
    dy = rng.standard_normal(model(x).shape)
    model.backward(dy)
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model(x)
    assert model.backward(dy, input_grad=False) is None
    for got, want in zip([p.grad for p in model.parameters()], grads, strict=True):
        np.testing.assert_array_equal(got, want)


def test_eval_mode_forward_keeps_nothing_for_backward():
    model = cnn(True, "jit").eval()
    x = np.random.default_rng(2).standard_normal((2, 2, 8, 10))
    y = model(x)
    np.testing.assert_allclose(y, layer_by_layer(model, x, np.ones(y.shape))[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="eval"):
        model.backward(np.ones(y.shape))
