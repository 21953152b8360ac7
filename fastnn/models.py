"""The model zoo shared by the CLI, scripts and benchmarks: MNIST classifiers, input (N, 1, 28, 28).

Every layer's Generator is derived from the one ``seed`` (so one seed gives one set of weights and
dropout masks), and ``backend`` is passed to every layer that calls a kernel (None: the backend in
force at call time, see ``fastnn.backend``).
"""
import numpy as np

from .nn import BatchNorm1d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential

INPUT_FEATURES = 28 * 28
NUM_CLASSES = 10


def _layer_rngs(seed):
    """An endless supply of independent Generators, all determined by ``seed``."""
    seeds = np.random.SeedSequence(seed)
    while True:
        yield np.random.default_rng(seeds.spawn(1)[0])


def mlp(hidden=(512,), batchnorm=False, dropout=0.0, *, seed=0, backend=None):
    """Flatten, then per hidden width: Linear [BatchNorm1d] ReLU [Dropout(dropout) if > 0]; Linear(..., 10)."""
    rngs = _layer_rngs(seed)
    layers = [Flatten()]
    width = INPUT_FEATURES
    for size in hidden:
        layers.append(Linear(width, size, rng=next(rngs), backend=backend))
        if batchnorm:
            layers.append(BatchNorm1d(size, backend=backend))
        layers.append(ReLU(backend=backend))
        if dropout > 0:
            layers.append(Dropout(dropout, rng=next(rngs), backend=backend))
        width = size
    layers.append(Linear(width, NUM_CLASSES, rng=next(rngs), backend=backend))
    return Sequential(*layers)


def seed_cnn(*, seed=0, backend=None):
    """Conv 1->8 3x3, MaxPool 2, Flatten, Linear 1352->10 (8 channels of 13x13)."""
    rngs = _layer_rngs(seed)
    return Sequential(
        Conv2d(1, 8, 3, rng=next(rngs), backend=backend),
        MaxPool2d(2, backend=backend),
        Flatten(),
        Linear(8 * 13 * 13, NUM_CLASSES, rng=next(rngs), backend=backend),
    )


def lenet(*, seed=0, backend=None):
    """Conv 1->32 3x3 pad 1, ReLU, MaxPool 2, Conv 32->64 3x3 pad 1, ReLU, MaxPool 2, Flatten,
    Linear 3136->128, ReLU, Linear 128->10."""
    rngs = _layer_rngs(seed)
    return Sequential(
        Conv2d(1, 32, 3, padding=1, rng=next(rngs), backend=backend),
        ReLU(backend=backend),
        MaxPool2d(2, backend=backend),
        Conv2d(32, 64, 3, padding=1, rng=next(rngs), backend=backend),
        ReLU(backend=backend),
        MaxPool2d(2, backend=backend),
        Flatten(),
        Linear(64 * 7 * 7, 128, rng=next(rngs), backend=backend),
        ReLU(backend=backend),
        Linear(128, NUM_CLASSES, rng=next(rngs), backend=backend),
    )


MODELS = {"mlp": mlp, "seed_cnn": seed_cnn, "lenet": lenet}
