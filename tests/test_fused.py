"""Sequential's fused steps (Conv2d, [ReLU], MaxPool2d and Linear, ReLU): the same numbers as
the layers one by one, and ``backward(dy, input_grad=False)`` giving the same parameter gradients without d(input), for
these and for every other layer."""
import numpy as np
import pytest

from fastnn import nn
from fastnn.backend import use_backend


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


def mlp(backend, bias=True):
    """Linear, ReLU (fused), Linear, ReLU (fused), Linear: the hidden layers of an MLP, with
    random biases (a Linear starts with zeros, which would hide a bias left out)."""
    rng = np.random.default_rng(9)
    layers = [nn.Linear(12, 20, bias=bias, rng=rng, dtype=np.float64, backend=backend), nn.ReLU(backend=backend),
              nn.Linear(20, 7, bias=bias, rng=rng, dtype=np.float64, backend=backend), nn.ReLU(backend=backend),
              nn.Linear(7, 3, rng=rng, dtype=np.float64, backend=backend)]
    for layer in layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.data[:] = rng.standard_normal(layer.bias.data.shape)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("backend", ["reference", "vectorized", "jit"])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_relu_matches_its_layers_one_by_one(backend, bias):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 12))
    model = mlp(backend, bias)
    y = model(x)
    assert [type(step).__name__ for step in model._steps] == ["_LinearReLU", "_LinearReLU", "Linear"]
    dy = rng.standard_normal(y.shape)
    dx = model.backward(dy)
    grads = [p.grad.copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="fused"):
        model[1].backward(np.zeros((6, 20)))   # its gradient comes through the Sequential
    model.zero_grad()
    y_alone, dx_alone, grads_alone = layer_by_layer(model, x, dy)
    np.testing.assert_allclose(y, y_alone, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_alone, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(grads_alone) == (6 if bias else 4)
    for got, want in zip(grads, grads_alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_only_whole_runs_on_one_backend_are_fused():
    """A ReLU after a Linear of another backend, or a Linear with nothing after it, stays as it is."""
    rng = np.random.default_rng(11)
    model = nn.Sequential(nn.Linear(4, 5, rng=rng, backend="jit"), nn.ReLU(backend="reference"),
                          nn.ReLU(), nn.Linear(5, 2, rng=rng))
    model(np.ones((2, 4), np.float32))
    assert [type(step).__name__ for step in model._steps] == ["Linear", "ReLU", "ReLU", "Linear"]


def test_fused_steps_follow_changes_of_layers_and_backends(monkeypatch):
    """The fused steps are kept between forwards, and built again when a layer is replaced or a
    backend choice changes."""
    monkeypatch.delenv("FASTNN_BACKEND", raising=False)
    rng = np.random.default_rng(12)
    model = nn.Sequential(nn.Linear(4, 5, rng=rng), nn.ReLU())
    x = np.ones((2, 4), np.float32)

    def steps():
        model(x)
        return [type(step).__name__ for step in model._steps]

    assert steps() == ["_LinearReLU"]
    first = model._steps[0]
    assert steps() == ["_LinearReLU"] and model._steps[0] is first  # kept
    model[1].backend = "reference"
    assert steps() == ["Linear", "ReLU"]
    with use_backend("reference"):
        assert steps() == ["_LinearReLU"]  # both resolve to reference
    assert steps() == ["Linear", "ReLU"]
    model[1].backend = None
    assert steps() == ["_LinearReLU"]
    setattr(model, "1", nn.Flatten())  # a layer replaced
    assert steps() == ["Linear", "Flatten"]


def test_fused_steps_follow_a_replaced_layer_that_compares_equal_to_the_old_one():
    """Children are told apart by identity, not by a module's own ``==``."""
    class Scale(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x * self.k

        def __eq__(self, other):
            return type(other) is Scale

        __hash__ = object.__hash__

    model = nn.Sequential(nn.Linear(2, 2, rng=np.random.default_rng(0)), Scale(1.0))
    x = np.ones((1, 2), np.float32)
    y = model(x)
    setattr(model, "1", Scale(2.0))
    np.testing.assert_array_equal(model(x), 2 * y)


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


def every_layer_model(backend):
    """Flatten, a nested Sequential (Linear, BatchNorm1d, ReLU, Dropout), Linear: one of each kind
    of step ``Sequential.backward`` meets, with a parameter-free step before the first Linear."""
    rng = np.random.default_rng(4)
    inner = nn.Sequential(nn.Linear(12, 6, rng=rng, dtype=np.float64, backend=backend),
                          nn.BatchNorm1d(6, dtype=np.float64, backend=backend), nn.ReLU(backend=backend),
                          nn.Dropout(0.3, rng=5, backend=backend))
    return nn.Sequential(nn.Flatten(), inner, nn.Linear(6, 3, rng=rng, dtype=np.float64, backend=backend))


@pytest.mark.parametrize("backend", ["reference", "jit"])
@pytest.mark.parametrize("make", [every_layer_model, lambda backend: nn.Sequential(
    nn.Conv2d(1, 2, 3, rng=6, dtype=np.float64, backend=backend), nn.ReLU(backend=backend), nn.Flatten(),
    nn.Linear(2 * 1 * 2, 3, rng=7, dtype=np.float64, backend=backend)),
    lambda backend: nn.Sequential(nn.Flatten(), *mlp(backend))], ids=["mlp", "conv-unfused", "linear-relu-fused"])
def test_every_layer_gives_the_same_parameter_gradients_without_input_grad(backend, make):
    x = np.random.default_rng(8).standard_normal((5, 1, 3, 4))
    grads = []
    for input_grad in (True, False):
        model = make(backend)
        y = model(x)
        dx = model.backward(np.linspace(-1, 1, y.size).reshape(y.shape), input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        grads.append([p.grad for p in model.parameters()])
    for got, want in zip(*grads, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_first_linear_is_asked_to_skip_its_input_gradient(monkeypatch):
    """The saving itself: Sequential passes input_grad=False down to the kernel of the first
    layer with Parameters, and to no other."""
    from fastnn.kernels import vectorized

    asked = []
    real = vectorized.linear_backward
    monkeypatch.setattr(vectorized, "linear_backward",
                        lambda dy, cache, input_grad=True: asked.append(input_grad) or real(dy, cache, input_grad))
    from fastnn import kernels
    monkeypatch.setattr(kernels, "_namespaces", {})
    model = every_layer_model("vectorized")
    model.backward(np.ones(model(np.ones((4, 12))).shape), input_grad=False)
    assert asked == [True, False]   # the last Linear, then the first one
