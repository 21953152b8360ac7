"""Training on the real MNIST files (a slice, so that it is quick): every model learns on every
backend, and the vectorized and jit backends give the same per-epoch figures."""
import functools

import pytest

from fastnn.data import load_mnist
from fastnn.train import Config, Trainer, build_loaders, build_model, build_optimizer, build_schedule, evaluate

# name -> (model, options, training images, test accuracy it must pass); each trains one epoch
# with its default recipe. Chance is 10%. lenet, the slowest, sees the fewest images (31 steps).
MODELS = {
    "mlp": ("mlp", {}, 3000, 0.8),
    "mlp+bn+dropout": ("mlp", {"batchnorm": True, "dropout": 0.5}, 3000, 0.8),
    "seed_cnn": ("seed_cnn", {}, 3000, 0.75),
    "lenet": ("lenet", {"batch_size": 32}, 1000, 0.7),
}
TEST_IMAGES = 500


def train_one_epoch(mnist, name, backend):
    """(test figures before training, history of one epoch) for a MODELS entry on ``backend``."""
    model, options, limit, _ = MODELS[name]
    config = Config.for_model(model, **options, backend=backend, epochs=1, limit=limit, test_limit=TEST_IMAGES, seed=1)
    model = build_model(config)
    optimizer = build_optimizer(config, model.parameters())
    train, test = build_loaders(config, mnist)
    trainer = Trainer(model, optimizer, train, test, schedule=build_schedule(config, optimizer), progress=False,
                      log=lambda line: None)
    before = evaluate(model, test, trainer.criterion)
    return before, trainer.fit(1)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir, download=False)


@pytest.fixture(scope="module")
def trained(mnist):
    """``trained(name, backend)``: ``train_one_epoch``, run once per module for each pair."""
    return functools.cache(functools.partial(train_one_epoch, mnist))


@pytest.mark.parametrize("backend", ["vectorized", "jit"])
@pytest.mark.parametrize("name", MODELS)
def test_every_model_learns_on_every_backend(trained, name, backend):
    before, (epoch,) = trained(name, backend)
    assert before["accuracy"] < 0.3
    assert epoch["test_loss"] < before["loss"] / 2
    assert epoch["test_accuracy"] > MODELS[name][3] and epoch["train_accuracy"] > 0.4


def test_reference_backend_learns_on_a_tiny_slice(mnist):
    config = Config(model="mlp", hidden=(32,), backend="reference", epochs=2, batch_size=32, lr=0.05, limit=320,
                    test_limit=100, seed=1)
    model = build_model(config)
    optimizer = build_optimizer(config, model.parameters())
    train, test = build_loaders(config, mnist)
    trainer = Trainer(model, optimizer, train, test, progress=False, log=lambda line: None)
    before = evaluate(model, test, trainer.criterion)
    history = trainer.fit(2)
    assert history[-1]["test_loss"] < before["loss"] / 2 and history[-1]["test_accuracy"] > 0.6


@pytest.mark.parametrize("name", ["mlp", "seed_cnn"])
def test_vectorized_and_jit_give_the_same_figures_to_three_decimals(trained, name):
    (before_v, (vectorized,)), (before_j, (jit,)) = trained(name, "vectorized"), trained(name, "jit")
    assert before_v == pytest.approx(before_j, abs=5e-4)
    for field in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert vectorized[field] == pytest.approx(jit[field], abs=5e-4), field
