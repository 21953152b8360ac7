"""fastnn.data on tiny files written here: the IDX reader, load_mnist's search order, checksums
and downloads (through a fake urlopen: no network), the DataLoader, and image folders."""
import gzip
import hashlib
import http.client
import io
import re
import struct
import sys
import urllib.error

import numpy as np
import pytest

from fastnn import data
from fastnn.data import DataLoader, load_image_folder, load_mnist, read_idx

MNIST_STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx_bytes(array):
    """The IDX encoding of a uint8 array, written from the format's description."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path, blob, gz=False):
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


def named(path):
    """A pytest.raises match for a message naming `path`."""
    return re.escape(str(path))


# ----------------------------------------------------------------------------------- read_idx

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 3), (2, 1, 3, 2)])
def test_read_idx_round_trip(tmp_path, gz, shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = write(tmp_path / "a.idx", idx_bytes(array), gz)
    got = read_idx(path)
    assert got.dtype == np.uint8 and got.shape == shape
    np.testing.assert_array_equal(got, array)
    got[...] = 0                                  # the result is the caller's, writable


def test_read_idx_header_layout_from_magic_numbers(tmp_path):
    # MNIST's label files start 00 00 08 01 (magic 2049), image files 00 00 08 03 (magic 2051).
    labels = write(tmp_path / "l", (2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x07\x00\x09")
    images = write(tmp_path / "i", (2051).to_bytes(4, "big") + b"".join(
        n.to_bytes(4, "big") for n in (2, 1, 2)) + bytes([1, 2, 3, 4]))
    np.testing.assert_array_equal(read_idx(labels, ndim=1), [7, 0, 9])
    np.testing.assert_array_equal(read_idx(images, ndim=3), [[[1, 2]], [[3, 4]]])


def test_compression_is_detected_from_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw_named_gz = write(tmp_path / "x-idx2-ubyte.gz", idx_bytes(array))
    gz_named_raw = write(tmp_path / "x-idx2-ubyte", idx_bytes(array), gz=True)
    np.testing.assert_array_equal(read_idx(raw_named_gz), array)
    np.testing.assert_array_equal(read_idx(gz_named_raw), array)


BAD_IDX = {
    # name: (bytes of the decompressed file, words the message must contain)
    "empty": (b"", "truncated"),
    "short header": (b"\0\0\x08", "truncated"),
    "cut in dimensions": (b"\0\0\x08\x03" + struct.pack(">2I", 2, 3), "truncated"),
    "cut in data": (idx_bytes(np.ones((2, 3, 3)))[:-1], "truncated"),
    "no data": (idx_bytes(np.ones((2, 3, 3)))[:16], "truncated"),
    "extra data": (idx_bytes(np.ones((2, 3))) + b"\0", "too long"),
    "nonzero first bytes": (b"\x12\x34" + idx_bytes(np.ones(3))[2:], "wrong magic number"),
    "float type byte": (b"\0\0\x0d\x01" + struct.pack(">I", 1) + b"\0\0\0\0", "type byte 0x0D"),
    "zero dimensions": (b"\0\0\x08\x00", "0 dimensions"),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", BAD_IDX)
def test_bad_idx_raises_naming_file(tmp_path, case, gz):
    blob, words = BAD_IDX[case]
    path = write(tmp_path / "bad-idx3-ubyte", blob, gz)
    with pytest.raises(ValueError, match=named(path)) as info:
        read_idx(path)
    assert words in str(info.value)


def test_wrong_number_of_dimensions_is_a_wrong_magic_number(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(np.zeros(5)))
    with pytest.raises(ValueError, match=named(path)) as info:
        read_idx(path, ndim=3)
    assert "2049" in str(info.value) and "2051" in str(info.value)


def gz_corruptions(blob):
    compressed = gzip.compress(blob)
    bad_crc = bytearray(compressed)
    bad_crc[-8] ^= 0xFF                              # the CRC-32 trailer
    bad_deflate = bytearray(compressed)
    bad_deflate[12:20] = b"\xff" * 8                # inside the deflate stream
    return {"cut stream": compressed[:len(compressed) // 2], "bad crc": bytes(bad_crc),
            "bad deflate": bytes(bad_deflate), "header only": compressed[:10],
            "garbage after magic": b"\x1f\x8b" + b"garbage" * 5}


@pytest.mark.parametrize("case", list(gz_corruptions(b"")))
def test_corrupt_gzip_raises_naming_file(tmp_path, case):
    blob = idx_bytes(np.random.default_rng(1).integers(0, 256, (4, 8, 8)))
    path = write(tmp_path / "c.gz", gz_corruptions(blob)[case])
    with pytest.raises(ValueError, match=named(path)) as info:
        read_idx(path)
    assert "gzip" in str(info.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# ------------------------------------------------------------------------------ load_mnist

def tiny_mnist(seed, n_train=6, n_test=4, hw=(5, 4)):
    rng = np.random.default_rng(seed)
    return data.MNIST(rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
                      rng.integers(0, 10, n_train, dtype=np.uint8),
                      rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
                      rng.integers(0, 10, n_test, dtype=np.uint8))


def write_mnist(directory, mnist, gz=True, fields=MNIST_STEMS):
    directory.mkdir(parents=True, exist_ok=True)
    for field in fields:
        name = MNIST_STEMS[field] + (".gz" if gz else "")
        write(directory / name, idx_bytes(getattr(mnist, field)), gz)
    return directory


def assert_mnist_equal(got, expected):
    for field in MNIST_STEMS:
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
        assert getattr(got, field).dtype == np.uint8


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Point $FASTNN_DATA_DIR and the cache at empty temporary folders; forbid the network."""
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")
    monkeypatch.setattr(data, "urlopen", no_network)
    return {"root": tmp_path / "root", "env": tmp_path / "env",
            "cache": tmp_path / "xdg" / "fastnn" / "mnist"}


def test_cache_dir_follows_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.mnist_cache_dir() == tmp_path / "fastnn" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.mnist_cache_dir() == tmp_path / "home" / ".cache" / "fastnn" / "mnist"


def test_search_order_root_then_env_then_cache(places, monkeypatch):
    sets = {place: tiny_mnist(seed) for seed, place in enumerate(places)}
    for place, directory in places.items():
        write_mnist(directory, sets[place], gz=place != "env")
    assert_mnist_equal(load_mnist(places["root"], verify=False), sets["root"])
    assert_mnist_equal(load_mnist(verify=False), sets["env"])
    monkeypatch.delenv("FASTNN_DATA_DIR")
    assert_mnist_equal(load_mnist(verify=False), sets["cache"])
    monkeypatch.setenv("FASTNN_DATA_DIR", str(places["root"]))
    assert_mnist_equal(load_mnist(verify=False), sets["root"])


def test_incomplete_directory_is_skipped(places):
    complete, partial = tiny_mnist(0), tiny_mnist(1)
    write_mnist(places["root"], partial, fields=["train_images", "train_labels", "test_images"])
    write_mnist(places["cache"], complete)
    assert_mnist_equal(load_mnist(places["root"], verify=False), complete)


def test_raw_file_preferred_to_gz(places):
    raw, gz = tiny_mnist(0), tiny_mnist(1)
    write_mnist(places["root"], raw, gz=False)
    write_mnist(places["root"], gz, gz=True)
    assert_mnist_equal(load_mnist(places["root"], verify=False), raw)


def test_nothing_found_without_download_lists_places(places):
    write_mnist(places["root"], tiny_mnist(0), fields=["train_images"])
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(places["root"], download=False)
    message = str(info.value)
    for directory in places.values():
        assert str(directory) in message
    assert "t10k-labels-idx1-ubyte" in message


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_rejects_files_that_are_not_mnist(places):
    directory = write_mnist(places["root"], tiny_mnist(0))
    with pytest.raises(ValueError, match="verify=False") as info:
        load_mnist(directory)
    assert str(directory / "train-images-idx3-ubyte.gz") in str(info.value)


def test_verify_accepts_files_with_the_known_checksums(places, monkeypatch):
    expected = tiny_mnist(0)
    directory = write_mnist(places["root"], expected, gz=False)
    monkeypatch.setattr(data, "MNIST_SHA256", {p.name: sha256(p) for p in directory.iterdir()})
    assert_mnist_equal(load_mnist(directory), expected)


@pytest.mark.parametrize("split", ["train", "test"])
def test_image_and_label_counts_must_agree(places, split):
    mnist = tiny_mnist(0)._asdict()
    mnist[split + "_labels"] = mnist[split + "_labels"][:-1]
    directory = write_mnist(places["root"], data.MNIST(**mnist))
    with pytest.raises(ValueError, match=named(directory / (MNIST_STEMS[split + "_labels"] + ".gz"))):
        load_mnist(directory, verify=False)


def test_train_and_test_image_sizes_must_agree(places):
    mnist = tiny_mnist(0)._asdict()
    mnist["test_images"] = mnist["test_images"][:, :-1]
    directory = write_mnist(places["root"], data.MNIST(**mnist))
    with pytest.raises(ValueError, match="test images"):
        load_mnist(directory, verify=False)


def test_labels_in_place_of_images_is_a_wrong_magic_number(places):
    directory = write_mnist(places["root"], tiny_mnist(0))
    (directory / "t10k-labels-idx1-ubyte.gz").replace(directory / "t10k-images-idx3-ubyte.gz")
    write(directory / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(1)), gz=True)
    with pytest.raises(ValueError, match=named(directory / "t10k-images-idx3-ubyte.gz")):
        load_mnist(directory, verify=False)


# ------------------------------------------------------------------------------- downloads

class FakeResponse(io.BytesIO):
    """What urlopen returns, serving `blob`, or only its first `cut` bytes and then failing as a
    dropped connection does."""

    def __init__(self, blob, cut=None):
        super().__init__(blob[:cut])
        self.headers = {"Content-Length": str(len(blob))}
        self.cut = cut

    def read(self, size=-1):
        chunk = super().read(size)
        if not chunk and self.cut is not None:
            raise http.client.IncompleteRead(b"")
        return chunk


MIRRORS = ("https://one.invalid/mnist/", "https://two.invalid/mnist/")


@pytest.fixture
def server(places, monkeypatch):
    """A fake urlopen serving tiny MNIST .gz files; `served[url]` says what each URL does
    (bytes to serve, or an exception to raise), `requested` lists the URLs asked for."""
    expected = tiny_mnist(3)
    blobs = {MNIST_STEMS[f] + ".gz": gzip.compress(idx_bytes(getattr(expected, f))) for f in MNIST_STEMS}
    served = {base + name: blob for name, blob in blobs.items() for base in MIRRORS}
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        what = served.get(url, urllib.error.HTTPError(url, 404, "Not Found", {}, None))
        if isinstance(what, Exception):
            raise what
        return what if isinstance(what, FakeResponse) else FakeResponse(what)

    monkeypatch.setattr(data, "urlopen", fake_urlopen)
    monkeypatch.setattr(data, "MNIST_MIRRORS", MIRRORS)
    monkeypatch.setattr(data, "MNIST_SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()})
    monkeypatch.delenv("FASTNN_DATA_DIR")
    return {"expected": expected, "served": served, "requested": requested, "cache": places["cache"]}


def test_download_into_cache(server):
    first = MIRRORS[0] + "train-images-idx3-ubyte.gz"
    server["served"][first] = urllib.error.URLError("connection refused")
    assert_mnist_equal(load_mnist(), server["expected"])
    assert sorted(p.name for p in server["cache"].iterdir()) == sorted(n + ".gz" for n in MNIST_STEMS.values())
    assert server["requested"][0] == first and len(server["requested"]) == 5
    assert_mnist_equal(load_mnist(download=False), server["expected"])    # now found in the cache


def test_download_fetches_only_missing_files(server):
    write_mnist(server["cache"], server["expected"], fields=["train_images", "test_images"])
    assert_mnist_equal(load_mnist(), server["expected"])
    assert sorted(server["requested"]) == sorted(MIRRORS[0] + MNIST_STEMS[f] + ".gz"
                                                 for f in ["train_labels", "test_labels"])


def test_checksum_mismatch_and_cut_connection_leave_no_file(server):
    name = "t10k-images-idx3-ubyte.gz"
    good = server["served"][MIRRORS[0] + name]
    server["served"][MIRRORS[0] + name] = good[:-1] + bytes([good[-1] ^ 1])
    server["served"][MIRRORS[1] + name] = FakeResponse(good, cut=len(good) // 2)
    with pytest.raises(RuntimeError, match=re.escape(name)) as info:
        load_mnist()
    message = str(info.value)
    assert MIRRORS[0] + name in message and "SHA-256 mismatch" in message
    assert MIRRORS[1] + name in message and "IncompleteRead" in message
    assert not any(name in p.name for p in server["cache"].iterdir())


def test_all_mirrors_failing_lists_what_was_tried(server):
    server["served"].clear()
    with pytest.raises(RuntimeError) as info:
        load_mnist()
    for base in MIRRORS:
        assert base + "train-images-idx3-ubyte.gz" in str(info.value)
    assert "404" in str(info.value)
    assert list(server["cache"].iterdir()) == []


# ------------------------------------------------------------------------------ DataLoader

def numbered_images(n, hw=(4, 5)):
    """uint8 images whose pixel [0, 0] is the image's index (so batches can be traced)."""
    images = np.random.default_rng(n).integers(0, 256, (n, *hw), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    return images


def normalised(pixels, mean=0.1307, std=0.3081):
    return (np.asarray(pixels, np.float64) / 255 - mean) / std


def collect(loader):
    xs, ys = zip(*loader)
    return list(xs), list(ys)


@pytest.mark.parametrize("n, batch, drop_last, sizes", [
    (10, 3, False, [3, 3, 3, 1]), (10, 3, True, [3, 3, 3]), (9, 3, False, [3, 3, 3]),
    (9, 3, True, [3, 3, 3]), (2, 5, False, [2]), (2, 5, True, []), (4, 1, False, [1, 1, 1, 1])])
def test_batch_sizes_and_len(n, batch, drop_last, sizes):
    loader = DataLoader(numbered_images(n), np.arange(n), batch, drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(y) for _, y in loader] == sizes


def test_batches_in_order_normalised():
    images = numbered_images(10)
    xs, ys = collect(DataLoader(images, np.arange(10) % 3, 4))
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert xs[0].shape == (4, 1, 4, 5) and xs[0].dtype == np.float32 and ys[0].dtype == np.int64
    np.testing.assert_array_equal(y, np.arange(10) % 3)
    np.testing.assert_allclose(x[:, 0], normalised(images), rtol=1e-6)


def test_normalisation_endpoints_by_hand():
    # (0/255 - 0.1307) / 0.3081 = -0.424213 and (255/255 - 0.1307) / 0.3081 = 2.821487:
    # the familiar range of torchvision-normalised MNIST.
    images = np.array([[[0, 255]]], dtype=np.uint8)
    x, _ = next(iter(DataLoader(images, [0], dtype=np.float64)))
    np.testing.assert_allclose(x.ravel(), [-0.1307 / 0.3081, 0.8693 / 0.3081], rtol=1e-12)
    assert abs(x[0, 0, 0, 0] + 0.424213) < 1e-6 and abs(x[0, 0, 0, 1] - 2.821487) < 1e-6


def test_float_images_are_taken_as_scaled_and_channels_kept():
    images = np.random.default_rng(0).random((5, 3, 4, 4))
    x, _ = next(iter(DataLoader(images, np.zeros(5, int), 5, mean=0.5, std=0.25, dtype=np.float64)))
    np.testing.assert_allclose(x, (images - 0.5) / 0.25, rtol=1e-12)


def test_channel_axis_optional():
    images = numbered_images(6)
    a = np.concatenate(collect(DataLoader(images, np.arange(6), 4))[0])
    b = np.concatenate(collect(DataLoader(images[:, None], np.arange(6), 4))[0])
    np.testing.assert_array_equal(a, b)


def test_shuffle_sees_each_sample_once_with_its_label():
    n = 50
    images = numbered_images(n)
    loader = DataLoader(images, np.arange(n), 8, shuffle=True, seed=1)
    orders = []
    for _ in range(2):
        xs, ys = collect(loader)
        x, y = np.concatenate(xs), np.concatenate(ys)
        np.testing.assert_array_equal(np.sort(y), np.arange(n))
        np.testing.assert_allclose(x[:, 0], normalised(images[y]), rtol=1e-6)
        orders.append(y)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], np.arange(n))


def test_shuffle_is_deterministic_by_seed():
    images, labels = numbered_images(40), np.arange(40)
    def epochs(seed):
        loader = DataLoader(images, labels, 6, shuffle=True, seed=seed)
        return [np.concatenate(collect(loader)[1]) for _ in range(3)]
    np.testing.assert_array_equal(epochs(7), epochs(7))
    assert not np.array_equal(epochs(7)[0], epochs(8)[0])
    seeded = DataLoader(images, labels, 6, shuffle=True, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(np.concatenate(collect(seeded)[1]), epochs(7)[0])


@pytest.mark.parametrize("augment", [False, True])
def test_each_iter_draws_one_permutation_and_replays(augment):
    n = 23
    loader = DataLoader(numbered_images(n), np.arange(n), 5, shuffle=True, seed=3, augment=augment)
    collect(loader)                                           # move on to a later epoch
    state = loader.rng.bit_generator.state
    replica = np.random.default_rng()
    replica.bit_generator.state = state
    batches = iter(loader)                                    # the permutation is drawn here
    expected_order = replica.permutation(n)
    assert loader.rng.bit_generator.state == replica.bit_generator.state
    xs, ys = collect(batches)
    np.testing.assert_array_equal(np.concatenate(ys), expected_order)
    loader.rng.bit_generator.state = state                    # replay the epoch
    xs2, ys2 = collect(loader)
    for a, b in zip(xs + ys, xs2 + ys2):
        np.testing.assert_array_equal(a, b)


def test_without_shuffle_rng_is_untouched():
    loader = DataLoader(numbered_images(9), np.arange(9), 4)
    state = loader.rng.bit_generator.state
    collect(loader)
    assert loader.rng.bit_generator.state == state


@pytest.mark.parametrize("shuffle, augment", [(False, False), (True, False), (False, True)])
def test_batches_are_fresh_arrays(shuffle, augment):
    loader = DataLoader(numbered_images(12), np.arange(12), 4, shuffle=shuffle, augment=augment)
    state = loader.rng.bit_generator.state
    xs, ys = collect(loader)
    assert not np.shares_memory(xs[0], xs[1]) and not np.shares_memory(ys[0], ys[1])
    before, labels_before = np.concatenate(xs), np.concatenate(ys)
    for x, y in zip(xs, ys):
        x[...] = 99.0
        y[...] = -1
    loader.rng.bit_generator.state = state
    xs2, ys2 = collect(loader)
    np.testing.assert_array_equal(np.concatenate(ys2), labels_before)
    np.testing.assert_array_equal(np.concatenate(xs2), before)


@pytest.mark.parametrize("kwargs, words", [
    ({"images": np.zeros((3, 4, 4), np.uint8), "labels": np.zeros(4, int)}, "differ in length"),
    ({"labels": np.zeros((3, 1), int)}, "labels"),
    ({"labels": np.zeros(3)}, "labels"),
    ({"images": np.zeros((3, 16), np.uint8)}, "images"),
    ({"images": np.zeros((3, 4, 4), np.int32)}, "images"),
    ({"batch_size": 0}, "batch_size"),
    ({"std": 0.0}, "std"),
    ({"dtype": np.int32}, "dtype")])
def test_bad_arguments_raise(kwargs, words):
    args = {"images": np.zeros((3, 4, 4), np.uint8), "labels": np.zeros(3, int), **kwargs}
    with pytest.raises(ValueError, match=words):
        DataLoader(**args)


def shift_by_hand(image, dy, dx):
    """The uint8 image moved down by dy and right by dx, zero-filled."""
    h, w = image.shape
    out = np.zeros_like(image)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_augment_moves_a_single_bright_pixel_by_at_most_two():
    n = 400
    images = np.zeros((n, 9, 9), np.uint8)
    images[:, 4, 4] = 255
    xs, _ = collect(DataLoader(images, np.zeros(n, int), 64, augment=True, seed=5))
    x = np.concatenate(xs)[:, 0]
    bright, dark = normalised(255), normalised(0)
    np.testing.assert_allclose(x.max(axis=(1, 2)), bright, rtol=1e-6)
    assert np.all(np.isclose(x, bright, rtol=1e-6).sum(axis=(1, 2)) == 1)
    assert np.all(np.isclose(x, bright, rtol=1e-6) | np.isclose(x, dark, rtol=1e-6))
    rows, cols = np.divmod(np.argmax(x.reshape(n, -1), axis=1), 9)
    assert np.all(np.abs(rows - 4) <= 2) and np.all(np.abs(cols - 4) <= 2)
    assert len(set(zip(rows, cols))) == 25                   # all 25 shifts occur (p of failure < 1e-7)


def test_augment_is_an_exact_shift_drawn_from_the_loader_rng():
    n, batch = 30, 8
    images = np.random.default_rng(0).integers(1, 256, (n, 6, 7), dtype=np.uint8)
    loader = DataLoader(images, np.arange(n), batch, shuffle=True, augment=True, seed=11)
    replica = np.random.default_rng(11)
    order = replica.permutation(n)
    for start, (x, y) in zip(range(0, n, batch), loader):
        np.testing.assert_array_equal(y, order[start:start + batch])
        dy, dx = replica.integers(-2, 3, size=(2, len(y)))
        expected = [shift_by_hand(images[i], a, b) for i, a, b in zip(y, dy, dx)]
        np.testing.assert_allclose(x[:, 0], normalised(expected), rtol=1e-6)


def test_augment_moves_all_channels_together():
    images = np.random.default_rng(0).integers(1, 256, (20, 3, 6, 6), dtype=np.uint8)
    loader = DataLoader(images, np.arange(20), 20, augment=True, seed=2)
    x, _ = next(iter(loader))
    dy, dx = np.random.default_rng(2).integers(-2, 3, size=(2, 20))
    expected = [[shift_by_hand(channel, a, b) for channel in image] for image, a, b in zip(images, dy, dx)]
    np.testing.assert_allclose(x, normalised(expected), rtol=1e-6)


# ---------------------------------------------------------------------------- image folders

def save_png(path, array):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_labels_by_sorted_class_names(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {("zebra", "a.png"): rng.integers(0, 256, (6, 5), dtype=np.uint8),
                ("ant", "b.png"): rng.integers(0, 256, (6, 5), dtype=np.uint8),
                ("ant", "a.png"): rng.integers(0, 256, (6, 5), dtype=np.uint8),
                ("moth", "c.png"): rng.integers(0, 256, (6, 5), dtype=np.uint8)}
    for (cls, name), array in pictures.items():
        save_png(tmp_path / cls / name, array)
    (tmp_path / "ant" / ".DS_Store").write_bytes(b"not an image")
    (tmp_path / ".hidden").mkdir()
    images, labels, classes = load_image_folder(tmp_path)
    assert classes == ["ant", "moth", "zebra"]
    assert images.dtype == np.uint8 and images.shape == (4, 6, 5)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 0, 1, 2])
    for image, key in zip(images, [("ant", "a.png"), ("ant", "b.png"), ("moth", "c.png"), ("zebra", "a.png")]):
        np.testing.assert_array_equal(image, pictures[key])


def test_image_folder_rgb_is_channels_first(tmp_path):
    picture = np.random.default_rng(0).integers(0, 256, (4, 3, 3), dtype=np.uint8)
    save_png(tmp_path / "only" / "x.png", picture)
    images, labels, classes = load_image_folder(tmp_path, grayscale=False)
    assert images.shape == (1, 3, 4, 3)
    np.testing.assert_array_equal(images[0], picture.transpose(2, 0, 1))


def test_image_folder_sizes_must_match_unless_resized(tmp_path):
    save_png(tmp_path / "a" / "big.png", np.full((8, 6), 200, np.uint8))
    save_png(tmp_path / "b" / "small.png", np.full((4, 3), 100, np.uint8))
    with pytest.raises(ValueError, match=named(tmp_path / "b" / "small.png")) as info:
        load_image_folder(tmp_path)
    assert "size=" in str(info.value)
    images, _, _ = load_image_folder(tmp_path, size=(4, 3))
    assert images.shape == (2, 4, 3)
    np.testing.assert_array_equal(images[0], 200)               # a flat image stays flat
    assert load_image_folder(tmp_path, size=5)[0].shape == (2, 5, 5)


def test_image_folder_unreadable_file_is_named(tmp_path):
    save_png(tmp_path / "a" / "good.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "a" / "broken.png").write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match=named(tmp_path / "a" / "broken.png")):
        load_image_folder(tmp_path)


def test_image_folder_without_images(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path)


def test_image_folder_without_pillow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=re.escape("fastnn[images]")):
        load_image_folder(tmp_path)
