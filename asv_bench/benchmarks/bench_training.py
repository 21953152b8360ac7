"""Training and inference speed of whole models on MNIST, per backend.

A full 60,000-image epoch is measured on the fast backends only; the reference backend would need
hours, so ``TrainEpoch`` and ``Inference`` skip it (NotImplementedError) and ``ReferenceTraining``
measures it on a slice. Loading MNIST and compiling (or loading) jit kernels happen in ``setup``.
"""
from fastnn.data import DataLoader
from fastnn.kernels import BACKENDS

from .common import (FAST_BACKENDS, MODEL_NAMES, build_model, epoch_seconds, inference_seconds,
                     load_mnist, warm_up_model)

INFERENCE_BATCH = 1000
REFERENCE_IMAGES = 8
REFERENCE_BATCH = 4


def _require_fast(backend):
    if backend not in FAST_BACKENDS:
        raise NotImplementedError(f"the {backend} backend is measured on a slice (ReferenceTraining)")


class TrainEpoch:
    """One shuffled epoch over the 60,000 training images: SGD with momentum, cross-entropy."""
    params = [list(MODEL_NAMES), list(BACKENDS), [64, 256]]
    param_names = ["model", "backend", "batch"]
    rounds = 1
    timeout = 1800

    def setup(self, model, backend, batch):
        _require_fast(backend)
        self.mnist = load_mnist()
        warm_up_model(model, backend, batch, self.mnist.train_images, self.mnist.train_labels)

    def _epoch_seconds(self, model, backend, batch):
        loader = DataLoader(self.mnist.train_images, self.mnist.train_labels, batch_size=batch,
                            shuffle=True, seed=0)
        return epoch_seconds(build_model(model, backend), loader)

    def track_images_per_second(self, model, backend, batch):
        return len(self.mnist.train_labels) / self._epoch_seconds(model, backend, batch)

    track_images_per_second.unit = "images/s"

    def peakmem_epoch(self, model, backend, batch):
        self._epoch_seconds(model, backend, batch)


class Inference:
    """Predictions for the 10,000 test images at batch 1000, in eval mode."""
    params = [list(MODEL_NAMES), list(BACKENDS)]
    param_names = ["model", "backend"]
    timeout = 600

    def setup(self, model, backend):
        _require_fast(backend)
        mnist = load_mnist()
        self.images = len(mnist.test_labels)
        self.loader = DataLoader(mnist.test_images, mnist.test_labels, batch_size=INFERENCE_BATCH)
        self.model = build_model(model, backend)
        warm_loader = DataLoader(mnist.test_images[:INFERENCE_BATCH], mnist.test_labels[:INFERENCE_BATCH],
                                 batch_size=INFERENCE_BATCH)
        inference_seconds(self.model, warm_loader)

    def track_images_per_second(self, model, backend):
        return self.images / inference_seconds(self.model, self.loader)

    track_images_per_second.unit = "images/s"


class ReferenceTraining:
    """The reference backend's training speed, on the first ``REFERENCE_IMAGES`` training images."""
    params = [list(MODEL_NAMES)]
    param_names = ["model"]
    rounds = 1
    timeout = 600

    def setup(self, model):
        mnist = load_mnist()
        self.loader = DataLoader(mnist.train_images[:REFERENCE_IMAGES], mnist.train_labels[:REFERENCE_IMAGES],
                                 batch_size=REFERENCE_BATCH)

    def track_images_per_second(self, model):
        return REFERENCE_IMAGES / epoch_seconds(build_model(model, "reference"), self.loader)

    track_images_per_second.unit = "images/s"
