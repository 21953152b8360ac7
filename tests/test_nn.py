"""fastnn.nn: Module mechanics, each layer's wiring to its kernels, and a whole-model gradient check."""
import numpy as np
import pytest

import fastnn
from fastnn import backend, kernels, losses, nn


def tiny_net(rng=0, dtype=np.float32, backend=None):
    """Linear, BatchNorm1d, ReLU, and a nested Sequential holding a Linear."""
    return nn.Sequential(
        nn.Linear(3, 4, rng=rng, dtype=dtype, backend=backend),
        nn.BatchNorm1d(4, dtype=dtype, backend=backend),
        nn.ReLU(backend=backend),
        nn.Sequential(nn.Linear(4, 2, rng=rng, dtype=dtype, backend=backend)),
    )


# -- Module mechanics ----------------------------------------------------------------------------

def test_named_parameters_buffers_and_modules_are_named_in_registration_order():
    net = tiny_net()
    assert [name for name, _ in net.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "3.0.weight", "3.0.bias"]
    assert net.parameters() == [p for _, p in net.named_parameters()]
    assert net.parameters()[0] is net[0].weight
    assert net.parameters()[4] is net[3][0].weight
    assert [name for name, _ in net.named_buffers()] == ["1.running_mean", "1.running_var"]
    assert [name for name, _ in net.named_modules()] == ["", "0", "1", "2", "3", "3.0"]
    assert net.children() == [net[0], net[1], net[2], net[3]]
    assert net[1:3].children() == [net[1], net[2]]
    assert len(net) == 4


def test_attribute_assignment_registers_parameters_modules_and_buffers():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(np.ones(2))
            self.inner = nn.Linear(2, 2)
            self.register_buffer("count", np.zeros(1))
            self.note = "plain attribute"

    m = Custom()
    assert [name for name, _ in m.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [name for name, _ in m.named_buffers()] == ["count"]
    assert m.note == "plain attribute"
    assert set(m.state_dict()) == {"scale", "inner.weight", "inner.bias", "count"}

    m.count = np.full(1, 5.0)  # assigning to a buffer name replaces the buffer
    assert m.state_dict()["count"][0] == 5.0
    with pytest.raises(TypeError, match="scale"):
        m.scale = np.zeros(2)  # a registered Parameter cannot silently become a plain array
    with pytest.raises(TypeError, match="count"):
        m.count = 3.0
    with pytest.raises(ValueError, match="inner"):
        m.register_buffer("inner", np.zeros(1))

    del m.inner
    assert [name for name, _ in m.named_parameters()] == ["scale"]
    with pytest.raises(AttributeError):
        m.inner


def test_a_parameter_or_module_assigned_over_a_plain_attribute_is_registered():
    layer = nn.Linear(3, 2, bias=False, rng=np.random.default_rng(0))
    layer.bias = nn.Parameter(np.zeros(2, np.float32))  # a plain None until now
    layer.extra = None
    layer.extra = nn.ReLU()
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert "bias" not in layer.__dict__
    assert "extra" in layer._modules and "extra" not in layer.__dict__


def test_module_init_must_run_before_assignment():
    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="Module.__init__"):
        Forgetful()


def test_shared_parameter_is_listed_once():
    first = nn.Linear(2, 2)
    second = nn.Linear(2, 2)
    second.weight = first.weight
    net = nn.Sequential(first, second)
    assert [name for name, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.bias"]


def test_train_and_eval_recurse():
    net = tiny_net()
    assert all(m.training for _, m in net.named_modules())
    assert net.eval() is net
    assert not any(m.training for _, m in net.named_modules())
    net.train()
    assert all(m.training for _, m in net.named_modules())
    net[3].train(False)
    assert [m.training for _, m in net.named_modules()] == [True, True, True, True, False, False]


def test_zero_grad_clears_every_gradient():
    net = tiny_net(backend="vectorized")
    y = net(np.ones((5, 3), np.float32))
    net.backward(np.ones_like(y))
    assert all(p.grad is not None and p.grad.shape == p.data.shape for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_backward_accumulates_gradients():
    layer = nn.Linear(3, 2, backend="vectorized")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    dy = np.ones((2, 2), np.float32)
    layer(x)
    layer.backward(dy)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="before forward"):
        nn.ReLU().backward(np.ones(3))


# -- state_dict ----------------------------------------------------------------------------------

def test_state_dict_holds_copies():
    net = tiny_net()
    state = net.state_dict()
    assert set(state) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                          "3.0.weight", "3.0.bias"}
    before = net[0].weight.data.copy()
    state["0.weight"] += 1
    state["1.running_mean"][:] = 7
    np.testing.assert_array_equal(net[0].weight.data, before)
    np.testing.assert_array_equal(net[1].running_mean, 0)


def test_load_state_dict_round_trip_through_npz(tmp_path):
    source, target = tiny_net(rng=1), tiny_net(rng=2)
    source[1].running_var = np.full(4, 3.0, np.float32)
    np.savez(tmp_path / "net.npz", **source.state_dict())
    weight_object = target[0].weight
    with np.load(tmp_path / "net.npz") as saved:
        target.load_state_dict(saved)
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert target[0].weight is weight_object  # Parameters keep their identity (optimizers hold them)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("1.running_var"), "1.running_var"),
    (lambda s: s.update(extra=np.zeros(1)), "extra"),
    (lambda s: s.update({"3.0.bias": np.zeros(3, np.float32)}), "3.0.bias"),
    (lambda s: s.update({"3.0.bias": np.zeros(2, np.float64)}), "3.0.bias"),
])
def test_load_state_dict_is_strict_and_changes_nothing_on_error(change, message):
    source, target = tiny_net(rng=1), tiny_net(rng=2)
    state = source.state_dict()
    change(state)
    before = target.state_dict()
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        target.load_state_dict(state)
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


# -- layers --------------------------------------------------------------------------------------

def test_linear_init_is_he_normal_from_the_given_rng():
    layer = nn.Linear(400, 300, rng=np.random.default_rng(5))
    assert layer.weight.data.shape == (400, 300) and layer.weight.data.dtype == np.float32
    expected = (np.random.default_rng(5).standard_normal((400, 300)) * np.sqrt(2 / 400)).astype(np.float32)
    np.testing.assert_array_equal(layer.weight.data, expected)
    np.testing.assert_array_equal(layer.bias.data, np.zeros(300))
    # std of 120000 draws is within 1% of sqrt(2/400)
    assert abs(layer.weight.data.std() / np.sqrt(2 / 400) - 1) < 0.01
    np.testing.assert_array_equal(nn.Linear(400, 300, rng=5).weight.data, expected)
    np.testing.assert_array_equal(nn.Linear(4, 3).weight.data, nn.Linear(4, 3, rng=0).weight.data)
    assert nn.Linear(4, 3, dtype=np.float64).weight.data.dtype == np.float64


def test_conv2d_init_and_shapes():
    layer = nn.Conv2d(16, 32, 3, rng=3)
    assert layer.weight.data.shape == (32, 16, 3, 3) and layer.bias.data.shape == (32,)
    assert abs(layer.weight.data.std() / np.sqrt(2 / (16 * 9)) - 1) < 0.03
    assert nn.Conv2d(2, 4, (3, 5)).weight.data.shape == (4, 2, 3, 5)


@pytest.mark.parametrize("bad", [dict(rng="seed"), dict(rng=1.5), dict(dtype=np.int32), dict(backend="gpu")])
def test_bad_layer_arguments_raise(bad):
    with pytest.raises(ValueError):
        nn.Linear(2, 3, **bad)


def test_linear_layer_forward_and_backward():
    rng = np.random.default_rng(0)
    layer = nn.Linear(3, 2, backend="reference", dtype=np.float64)
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.bias.data[:] = [0.5, -1.0]
    np.testing.assert_allclose(layer(x), x @ layer.weight.data + layer.bias.data)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, dy @ layer.weight.data.T)
    np.testing.assert_allclose(layer.weight.grad, x.T @ dy)
    np.testing.assert_allclose(layer.bias.grad, dy.sum(axis=0))

    no_bias = nn.Linear(3, 2, bias=False, backend="reference", dtype=np.float64)
    assert [name for name, _ in no_bias.named_parameters()] == ["weight"]
    np.testing.assert_allclose(no_bias(x), x @ no_bias.weight.data)
    no_bias.backward(dy)
    np.testing.assert_allclose(no_bias.weight.grad, x.T @ dy)


def test_conv_pool_relu_flatten_layers_shapes():
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, backend="vectorized")
    y = conv(x)
    assert y.shape == (2, 5, 5, 5) and y.dtype == np.float32  # (9 + 2 - 3) // 2 + 1 = 5
    assert conv.backward(np.ones_like(y)).shape == x.shape
    pool = nn.MaxPool2d(2, backend="vectorized")
    assert pool(x).shape == (2, 3, 4, 4)
    relu = nn.ReLU(backend="vectorized")
    np.testing.assert_array_equal(relu(x), np.maximum(x, 0))
    flat = nn.Flatten()
    assert flat(x).shape == (2, 243)
    assert flat.backward(np.ones((2, 243))).shape == x.shape


def test_batchnorm_updates_running_statistics_in_training_only():
    x = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]])
    bn = nn.BatchNorm1d(2, dtype=np.float64, backend="reference")
    bn(x)
    # running = 0.9 * running + 0.1 * batch, with the unbiased variance: column 0 has var 4, column 1 700
    np.testing.assert_allclose(bn.running_mean, [0.1 * 3.0, 0.1 * 30.0])
    np.testing.assert_allclose(bn.running_var, [0.9 + 0.1 * 4.0, 0.9 + 0.1 * 700.0])
    bn.eval()
    y = bn(x)
    np.testing.assert_allclose(bn.running_mean, [0.3, 3.0])
    np.testing.assert_allclose(y, (x - [0.3, 3.0]) / np.sqrt(np.array([1.3, 70.9]) + 1e-5))
    with pytest.raises(ValueError, match="x"):
        bn(np.zeros((3, 2, 1, 1)))
    with pytest.raises(ValueError, match="x"):
        nn.BatchNorm2d(2)(np.zeros((3, 2), np.float32))


def test_batchnorm2d_normalises_per_channel():
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 5)).astype(np.float32) * 3 + 2
    y = nn.BatchNorm2d(3, backend="vectorized")(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)


def test_dropout_mask_comes_from_its_rng_and_eval_is_identity():
    x = np.random.default_rng(0).standard_normal((50, 40)).astype(np.float32)
    dy = np.ones_like(x)
    drop = nn.Dropout(0.25, rng=7, backend="reference")
    seed = int(np.random.default_rng(7).integers(2**64, dtype=np.uint64))
    keep = kernels.get("reference").dropout_mask(x.shape, 0.25, seed)
    np.testing.assert_allclose(drop(x), x * keep / np.float32(0.75), rtol=1e-6)
    np.testing.assert_allclose(drop.backward(dy), keep / np.float32(0.75), rtol=1e-6)
    assert abs(keep.mean() - 0.75) < 0.03

    drop.eval()
    assert drop(x) is x and drop.backward(dy) is dy
    drop.train()
    zero = nn.Dropout(0.0)
    assert zero(x) is x and zero.backward(dy) is dy
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="p"):
            nn.Dropout(p)


# -- backend selection ---------------------------------------------------------------------------

def used_backend(layer):
    """Name of the kernel backend the layer's last forward pass ran on."""
    return layer._forward_state[0].name


def test_layers_use_their_own_backend_else_the_one_in_force_at_call_time(monkeypatch):
    x = np.ones((2, 3), np.float32)
    free, pinned = nn.Linear(3, 2), nn.Linear(3, 2, backend="vectorized")
    with fastnn.use_backend("reference"):
        free(x)
        pinned(x)
        assert backend.resolve(free.backend) == "reference"
    assert used_backend(free) == "reference" and used_backend(pinned) == "vectorized"
    monkeypatch.setenv("FASTNN_BACKEND", "vectorized")
    free(x)
    assert used_backend(free) == "vectorized"
    with fastnn.use_backend("reference"):
        free(x)
    # backward runs on the backend that made the cache, whatever is in force now
    assert free.backward(np.ones((2, 2), np.float32)).shape == (2, 3)
    assert used_backend(free) == "reference"


# -- whole-model gradient check ------------------------------------------------------------------

def test_whole_model_gradients_match_finite_differences():
    rng = np.random.default_rng(42)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(27, 5, rng=rng, dtype=np.float64),
        nn.BatchNorm1d(5, dtype=np.float64),
        nn.Dropout(0.3),
        nn.Linear(5, 3, rng=rng, dtype=np.float64),
    )
    for bn_param in model[5].parameters():  # move gamma/beta off their initial 1 and 0
        bn_param.data[:] = rng.uniform(0.5, 1.5, bn_param.data.shape)
    x = rng.standard_normal((4, 2, 6, 6))
    labels = np.array([0, 2, 1, 2])
    criterion = losses.CrossEntropyLoss()
    dropout = model[6]

    def loss_at():
        dropout.rng = np.random.default_rng(3)  # the same mask every forward pass
        return criterion(model(x), labels)

    with fastnn.use_backend("reference"):
        keep = np.random.default_rng(3).random((4, 5)) >= 0.3
        assert keep.any() and not keep.all()  # the fixed mask keeps some units and drops others
        loss = loss_at()
        dx = model.backward(loss.backward())
        grads = {name: p.grad.copy() for name, p in model.named_parameters()}
        h = 1e-6
        for name, p in model.named_parameters():
            numeric = np.zeros_like(p.data)
            for i in np.ndindex(p.data.shape):
                original = p.data[i]
                p.data[i] = original + h
                up = float(loss_at())
                p.data[i] = original - h
                down = float(loss_at())
                p.data[i] = original
                numeric[i] = (up - down) / (2 * h)
            np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)
        for i in [tuple(index) for index in rng.integers(0, [4, 2, 6, 6], size=(30, 4))]:
            original = x[i]
            x[i] = original + h
            up = float(loss_at())
            x[i] = original - h
            down = float(loss_at())
            x[i] = original
            np.testing.assert_allclose(dx[i], (up - down) / (2 * h), rtol=1e-5, atol=1e-8, err_msg=str(i))


def test_float32_model_keeps_float32():
    net = tiny_net(backend="vectorized")
    y = net(np.ones((5, 3), np.float32))
    dx = net.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in net.parameters())
    assert all(b.dtype == np.float32 for _, b in net.named_buffers())
