"""fastnn.models: the zoo's shapes match DESIGN.md, seeds fix the weights, backends are honoured."""
import numpy as np
import pytest

import fastnn
from fastnn import backend, models, nn


def shapes(model):
    return [p.data.shape for p in model.parameters()]


def test_mlp_layers_and_shapes():
    assert shapes(models.mlp()) == [(784, 512), (512,), (512, 10), (10,)]
    model = models.mlp(hidden=(32, 16), batchnorm=True, dropout=0.2)
    assert [type(m) for m in model] == [
        nn.Flatten,
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout,
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout,
        nn.Linear]
    assert shapes(model) == [(784, 32), (32,), (32,), (32,), (32, 16), (16,), (16,), (16,), (16, 10), (10,)]
    assert model[4].p == 0.2


def test_seed_cnn_shapes():
    model = models.seed_cnn()
    assert [type(m) for m in model] == [nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
    # 8 channels of (28 - 3 + 1) / 2 = 13 by 13 after pooling = 1352 features
    assert shapes(model) == [(8, 1, 3, 3), (8,), (1352, 10), (10,)]


def test_lenet_shapes_and_parameter_count():
    model = models.lenet()
    assert shapes(model) == [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (3136, 128), (128,), (128, 10), (10,)]
    assert sum(p.data.size for p in model.parameters()) == 320 + 18496 + 401536 + 1290
    assert model[0].padding == 1 and model[3].padding == 1


@pytest.mark.parametrize("name", models.MODELS)
def test_same_seed_same_weights(name):
    make = models.MODELS[name]
    a, b, c = make(seed=3).state_dict(), make(seed=3).state_dict(), make(seed=4).state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert any(not np.array_equal(a[key], c[key]) for key in a)
    weights = [p.data for p in make(seed=3).parameters() if p.data.ndim > 1]
    assert all(w.dtype == np.float32 for w in weights)
    # no two layers share their random stream
    assert len({w.ravel()[0] for w in weights}) == len(weights)


def test_mlp_dropout_masks_depend_on_the_seed():
    h = np.ones((4, 64), np.float32)
    dropouts = [models.mlp(hidden=(64,), dropout=0.5, seed=s, backend="vectorized")[3] for s in (0, 0, 1)]
    assert all(isinstance(d, nn.Dropout) for d in dropouts)
    masks = [d(h) != 0 for d in dropouts]
    assert (masks[0] == masks[1]).all() and not (masks[0] == masks[2]).all()


@pytest.mark.parametrize("name", models.MODELS)
def test_output_shape(name):
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    model = models.MODELS[name](backend="vectorized")
    y = model(x)
    assert y.shape == (3, 10) and y.dtype == np.float32
    dx = model.backward(np.ones_like(y))
    assert dx.shape == x.shape


def kernel_layers(model):
    return [m for m in model if not isinstance(m, nn.Flatten)]


def used_backend(layer):
    """Name of the kernel backend the layer's last forward pass ran on."""
    return layer._forward_state[0].name


def test_backend_is_passed_to_every_layer():
    model = models.mlp(hidden=(8,), batchnorm=True, dropout=0.1, backend="reference")
    assert all(m.backend == "reference" for m in kernel_layers(model))
    with fastnn.use_backend("vectorized"):
        model(np.ones((2, 1, 28, 28), np.float32))
    assert [used_backend(m) for m in kernel_layers(model)] == ["reference"] * len(kernel_layers(model))


def test_use_backend_chooses_for_layers_without_their_own():
    model = models.seed_cnn()
    assert all(m.backend is None for m in kernel_layers(model))
    x = np.ones((1, 1, 28, 28), np.float32)
    for name in ("reference", "vectorized"):
        with fastnn.use_backend(name):
            assert all(backend.resolve(m.backend) == name for m in kernel_layers(model))
            model(x)
        assert [used_backend(m) for m in kernel_layers(model)] == [name] * 3
