"""fastnn.data on the real MNIST files (the `mnist_dir` fixture; no network)."""
import gzip
import hashlib

import numpy as np
import pytest

from fastnn import data
from fastnn.data import DataLoader, load_mnist

# Images per digit 0..9, as published for MNIST's training and test sets.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir, download=False)


def test_checksum_constants_match_sha256sums(mnist_dir):
    published = dict(reversed(line.split()) for line in (mnist_dir / "SHA256SUMS").read_text().splitlines())
    assert {name: data.MNIST_SHA256[name] for name in published} == published
    for name, digest in published.items():
        blob = (mnist_dir / name).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == digest
        raw_name = name.removesuffix(".gz")
        assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == data.MNIST_SHA256[raw_name]
    assert len(data.MNIST_SHA256) == 8


def test_real_mnist_shapes_and_labels(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in mnist)
    assert np.bincount(mnist.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.test_labels, minlength=10).tolist() == TEST_COUNTS
    assert sum(TRAIN_COUNTS) == 60000 and sum(TEST_COUNTS) == 10000
    assert mnist.train_images.min() == 0 and mnist.train_images.max() == 255


def test_default_normalisation_is_mnist_statistics(mnist):
    # 0.1307 and 0.3081 are the mean and standard deviation of MNIST's training pixels / 255,
    # so the normalised training set has mean ~0 and standard deviation ~1. The loader's map is
    # affine, x = b + a * pixel: read a and b off the black and white pixels it produces.
    levels = np.array([[[0]], [[255]]], dtype=np.uint8)
    x, _ = next(iter(DataLoader(levels, [0, 0], dtype=np.float64)))
    b, a = x[0].item(), (x[1].item() - x[0].item()) / 255
    total = total_sq = 0.0
    for chunk in np.array_split(mnist.train_images.ravel(), 60):   # small float64 temporaries
        chunk = chunk.astype(np.float64)
        total, total_sq = total + chunk.sum(), total_sq + chunk @ chunk
    mean = total / mnist.train_images.size
    std = np.sqrt(total_sq / mnist.train_images.size - mean**2)
    assert abs(b + a * mean) < 1e-3 and abs(a * std - 1) < 1e-3


def test_one_shuffled_augmented_epoch(mnist):
    loader = DataLoader(mnist.test_images, mnist.test_labels, 256, shuffle=True, augment=True)
    assert len(loader) == 40                                   # ceil(10000 / 256)
    counts = np.zeros(10, int)
    for x, y in loader:
        assert x.shape[1:] == (1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
        counts += np.bincount(y, minlength=10)
    assert counts.tolist() == TEST_COUNTS


def test_found_through_environment_variable(mnist_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNN_DATA_DIR", str(mnist_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    mnist = load_mnist(download=False)
    assert len(mnist.test_labels) == 10000
