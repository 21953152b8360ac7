"""Data for fastnn: the IDX reader, MNIST (found on disk or downloaded and verified), a loader for
folders of images, and the `DataLoader` that normalises, shuffles, batches and augments.

Typical use::

    mnist = load_mnist()
    train = DataLoader(mnist.train_images, mnist.train_labels, 64, shuffle=True, seed=0)
    for x, y in train:          # x (64, 1, 28, 28) float32, y (64,) int64
        ...
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import operator
import os
import pathlib
import tempfile
import zlib
from typing import NamedTuple
from urllib.request import urlopen

import numpy as np
from tqdm import tqdm

from .nn import make_rng

__all__ = ["read_idx", "MNIST", "load_mnist", "mnist_cache_dir", "MNIST_MIRRORS", "MNIST_SHA256",
           "DataLoader", "load_image_folder"]

# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UNSIGNED_BYTE = 0x08


def read_idx(path, *, ndim=None):
    """Read an IDX file of unsigned bytes, raw or gzip-compressed, into a uint8 array.

    IDX layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type read here), a
    byte d giving the number of dimensions, d big-endian uint32 sizes, then the prod(sizes) data
    bytes in C order and nothing after them. Read as one big-endian integer, the first four bytes
    are the "magic number": 2049 (0x00000801) for MNIST's 1-D label files, 2051 (0x00000803) for
    its 3-D image files. Compression is recognised from the content (gzip's magic bytes 1f 8b),
    not from the file name.

    path: file to read. ndim: if given, the number of dimensions the file must declare.
    Returns a writable uint8 array of the declared shape, e.g. (60000, 28, 28) for MNIST's
    training images. A truncated, corrupt or mismatched file raises ValueError naming the file
    and what is wrong.
    """
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not compressed:
            return _parse_idx(f.read(), path, ndim)
        try:
            with gzip.GzipFile(fileobj=f) as gz:
                blob = gz.read()
        except (EOFError, OSError, zlib.error) as exc:   # cut-off stream, bad header/CRC/deflate
            raise ValueError(f"{path}: truncated or corrupt gzip data ({exc})") from exc
    return _parse_idx(blob, path, ndim)


def _parse_idx(blob, path, ndim):
    """Check the IDX header of the bytes `blob` (the whole file, decompressed) against its
    length; return the data as a uint8 array of the declared shape. Errors name `path`."""
    if len(blob) < 4:
        raise ValueError(f"{path}: truncated: {len(blob)} bytes, too short for an IDX header")
    magic = int.from_bytes(blob[:4], "big")
    type_byte, rank = blob[2], blob[3]
    if blob[:2] != b"\0\0":
        raise ValueError(f"{path}: wrong magic number 0x{magic:08X}: not an IDX file "
                         "(an IDX file starts with two zero bytes)")
    if type_byte != _IDX_UNSIGNED_BYTE:
        raise ValueError(f"{path}: magic number 0x{magic:08X} has IDX type byte "
                         f"0x{type_byte:02X}; only 0x08 (unsigned byte) is supported")
    if rank == 0:
        raise ValueError(f"{path}: magic number 0x{magic:08X} declares 0 dimensions")
    if ndim is not None and rank != ndim:
        expected = (_IDX_UNSIGNED_BYTE << 8) + ndim
        raise ValueError(f"{path}: wrong magic number {magic} (0x{magic:08X}, {rank}-D data); "
                         f"expected {expected} (0x{expected:08X}, {ndim}-D data)")
    header = 4 + 4 * rank
    if len(blob) < header:
        raise ValueError(f"{path}: truncated: {len(blob)} bytes, too short for the {header}-byte "
                         f"header of {rank}-D IDX data")
    shape = tuple(int(size) for size in np.frombuffer(blob, ">u4", count=rank, offset=4))
    expected = header + math.prod(shape)
    if len(blob) != expected:
        problem = "truncated" if len(blob) < expected else "too long"
        raise ValueError(f"{path}: {problem}: dimensions {shape} need {expected} bytes "
                         f"({header} header + {expected - header} data), found {len(blob)}")
    return np.frombuffer(blob, np.uint8, offset=header).reshape(shape).copy()


# ---------------------------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------------------------

#: Base URLs tried in order: the mirror torchvision uses, then the Google Cloud Storage bucket
#: of the CVDF that TensorFlow's MNIST tutorials use. (yann.lecun.com no longer serves them.)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# The canonical file of each field, without ".gz", and its number of dimensions.
_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}

#: SHA-256 of the canonical MNIST files: the published .gz files, and what they decompress to.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_CHUNK = 1 << 20


class MNIST(NamedTuple):
    """MNIST as uint8 arrays: images (N, 28, 28), labels (N,) with N = 60000 (train), 10000 (test)."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def mnist_cache_dir():
    """The user cache directory for MNIST: $XDG_CACHE_HOME/fastnn/mnist, else ~/.cache/fastnn/mnist."""
    base = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(base) if base else pathlib.Path.home() / ".cache"
    return base / "fastnn" / "mnist"


def load_mnist(root=None, *, download=True, verify=True):
    """Load MNIST, or any dataset stored as MNIST's four IDX files (e.g. Fashion-MNIST).

    The first directory holding all four files (each `train-images-idx3-ubyte`, raw or `.gz`;
    likewise `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`) is
    used, searched in this order: `root`, `$FASTNN_DATA_DIR`, the user cache directory
    (`mnist_cache_dir()`). If none has them and `download` is true, the files missing from the
    cache directory are downloaded there from `MNIST_MIRRORS`, each to a temporary file that is
    checked against its SHA-256 and only then renamed into place.

    verify: check every file against MNIST's known SHA-256 (about 30 ms for the .gz files); a
    mismatch raises ValueError. Pass False to load other data in MNIST's file layout.
    Returns an `MNIST` namedtuple of uint8 arrays. Raises FileNotFoundError (listing the places
    searched) if nothing is found and `download` is false, RuntimeError (listing every URL tried
    and why it failed) if a download fails, ValueError for a corrupt or inconsistent file.
    """
    places = []
    if root is not None:
        places.append(("root", pathlib.Path(root)))
    env = os.environ.get("FASTNN_DATA_DIR")
    if env:
        places.append(("$FASTNN_DATA_DIR", pathlib.Path(env)))
    cache = mnist_cache_dir()
    places.append(("cache", cache))

    searched = []
    for what, directory in places:
        found, missing = _find_mnist_files(directory)
        if not missing:
            return _read_mnist(found, verify)
        searched.append(f"{what} {directory}: " + ("missing " + ", ".join(m + "[.gz]" for m in missing)
                                                   if directory.is_dir() else "no such directory"))
    if not download:
        raise FileNotFoundError("MNIST files not found; searched:\n  " + "\n  ".join(searched)
                                + "\n(pass download=True to download them)")
    cache.mkdir(parents=True, exist_ok=True)
    found, missing = _find_mnist_files(cache)
    for stem in missing:
        found[stem] = _download(stem + ".gz", cache)
    return _read_mnist(found, verify)


def _find_mnist_files(directory):
    """Return ({stem: path} for the MNIST files present in `directory` (raw preferred to .gz,
    it reads faster), [stems missing])."""
    found, missing = {}, []
    for stem, _ in _MNIST_FILES.values():
        candidates = [directory / stem, directory / (stem + ".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(stem)
        else:
            found[stem] = path
    return found, missing


def _read_mnist(paths, verify):
    """Read the four files `paths` ({stem: path}), check their checksums if `verify`, and check
    that images and labels agree in count and train and test images in size."""
    files = {field: paths[stem] for field, (stem, _) in _MNIST_FILES.items()}
    arrays = {}
    for field, (_, ndim) in _MNIST_FILES.items():
        path = files[field]
        if verify:
            digest = _sha256(path)
            if digest != MNIST_SHA256[path.name]:
                raise ValueError(
                    f"{path}: SHA-256 {digest} is not that of MNIST's {path.name} "
                    f"({MNIST_SHA256[path.name]}); if this is other data in MNIST's file layout "
                    "(e.g. Fashion-MNIST), pass verify=False")
        arrays[field] = read_idx(path, ndim=ndim)
    for split in ("train", "test"):
        images, labels = arrays[split + "_images"], arrays[split + "_labels"]
        if len(images) != len(labels):
            raise ValueError(f"{files[split + '_images']} holds {len(images)} images but "
                             f"{files[split + '_labels']} holds {len(labels)} labels")
    train_size, test_size = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train_size != test_size:
        raise ValueError(f"{files['test_images']}: test images are {test_size} but training "
                         f"images are {train_size}")
    return MNIST(**arrays)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(name, directory):
    """Download the MNIST file `name` into `directory` from the first mirror that serves it with
    the right SHA-256; return its path. The bytes go to a temporary file in `directory`, renamed
    into place only once verified, so a failure leaves nothing behind. Raises RuntimeError
    listing every URL tried and why it failed."""
    failures = []
    for base in MNIST_MIRRORS:
        url = base + name
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        try:
            with os.fdopen(handle, "wb") as out, urlopen(url, timeout=60) as response:
                length = response.headers.get("Content-Length")
                digest = hashlib.sha256()
                with tqdm(total=int(length) if length else None, unit="B", unit_scale=True,
                          desc=name) as progress:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        progress.update(len(chunk))
            if digest.hexdigest() != MNIST_SHA256[name]:
                failures.append(f"{url}: SHA-256 mismatch (got {digest.hexdigest()}, "
                                f"expected {MNIST_SHA256[name]})")
                continue
            os.replace(tmp, directory / name)
            return directory / name
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, cut connections
            failures.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise RuntimeError(f"could not download {name}; tried:\n  " + "\n  ".join(failures)
                       + "\nDownload the MNIST files by hand and pass their directory as root= "
                       "or set FASTNN_DATA_DIR.")


# ---------------------------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------------------------

#: Largest shift, in pixels, of `DataLoader(augment=True)`.
AUGMENT_SHIFT = 2


class DataLoader:
    """Batches of normalised images and their labels, optionally shuffled and augmented.

    images: (N, H, W) or (N, C, H, W) array, uint8 (pixels 0..255, divided by 255) or float
    (taken as already scaled to [0, 1]). labels: (N,) integers.
    Every pixel p becomes (p - mean) / std, computed once for the whole set at construction and
    stored as `dtype` (188 MB for MNIST's training set in float32; 246 MB with `augment`, which
    stores the images padded by 2 pixels).

    Iterating yields (x, y): x (B, C, H, W) `dtype`, y (B,) int64, B = batch_size except perhaps
    for a shorter last batch, dropped if `drop_last`. Each batch is a fresh array owned by the
    caller (no batch shares memory with another or with the loader). `len(loader)` is the number
    of batches.

    Randomness comes from `loader.rng`, a numpy Generator made from `seed` (an int or a
    Generator; None means 0). When shuffling, each `iter(loader)` draws exactly one
    `rng.permutation(N)`, at the call; with `augment`, each batch then draws its shifts,
    `dy, dx = rng.integers(-2, 3, size=(2, B))`. So saving `rng.bit_generator.state` before an
    epoch and restoring it replays that epoch exactly.

    augment: shift each image by its own random whole number of pixels, dy and dx in [-2, 2]
    (content moves down by dy and right by dx), filling the uncovered border with the value of a
    0 pixel, (0 - mean) / std.
    """

    def __init__(self, images, labels, batch_size=64, *, shuffle=False, drop_last=False, seed=0,
                 mean=0.1307, std=0.3081, dtype=np.float32, augment=False):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {images.shape}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} "
                             f"dtype {labels.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: images {images.shape}, "
                             f"labels {labels.shape}")
        batch_size = operator.index(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not (np.isfinite(std) and std > 0):
            raise ValueError(f"std must be positive, got {std}")
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"dtype must be a floating type, got {dtype}")

        if images.dtype == np.uint8:
            # Normalise through a 256-entry table computed in float64: exact and fast.
            table = ((np.arange(256) / 255.0 - mean) / std).astype(dtype)
            x = table[images]
        elif np.issubdtype(images.dtype, np.floating):
            x = ((images.astype(np.float64) - mean) / std).astype(dtype)
        else:
            raise ValueError(f"images must be uint8 or float, got dtype {images.dtype}")
        if augment:
            # Pad every image once with the value of a 0 pixel; windows[i, c, a, b] is then the
            # (H, W) window of padded image i at offset (a, b): the image moved by (s-a, s-b).
            s = AUGMENT_SHIFT
            padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)), constant_values=(0.0 - mean) / std)
            self._windows = np.lib.stride_tricks.sliding_window_view(padded, x.shape[2:], axis=(2, 3))
        else:
            self._x = x
        self._augment = bool(augment)
        self._y = labels.astype(np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rng = make_rng(seed)

    @property
    def augment(self):
        """Whether batches are randomly shifted (fixed at construction: it sets the storage)."""
        return self._augment

    @property
    def num_samples(self):
        """N, the number of images in the data set."""
        return len(self._y)

    def __len__(self):
        n, b = len(self._y), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self._y)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        return self._batches(order)

    def _batches(self, order):
        b, s = self.batch_size, AUGMENT_SHIFT
        for start in range(0, len(self) * b, b):
            index = order[start:start + b]
            if self._augment:
                dy, dx = self.rng.integers(-s, s + 1, size=(2, len(index)))
                x = self._windows[index, :, s - dy, s - dx]
            else:
                x = self._x[index]
            yield x, self._y[index]


# ---------------------------------------------------------------------------------------------
# Folders of images
# ---------------------------------------------------------------------------------------------

def load_image_folder(root, *, size=None, grayscale=True):
    """Load a folder holding one sub-folder of images per class, in any format Pillow reads.

    Class names are the sub-folder names, sorted; a class's label is its index in that list.
    Names starting with "." are skipped. size: (height, width) or an int for squares; every image
    is resized to it (bilinear). Without it all images must already share one size.
    grayscale: convert to 8-bit grey (images (N, H, W)); otherwise to RGB (images (N, 3, H, W)).
    Returns (images uint8, labels int64 (N,), class_names list of str).
    Needs Pillow (`pip install 'fastnn[images]'`). An unreadable file raises ValueError naming it.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("load_image_folder needs Pillow; install it with "
                          "pip install 'fastnn[images]'") from exc
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    if isinstance(size, int):
        size = (size, size)
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels, paths = [], [], []
    for label, name in enumerate(class_names):
        files = sorted(p for p in (root / name).iterdir()
                       if p.is_file() and not p.name.startswith("."))
        for path in files:
            try:
                with Image.open(path) as image:
                    image = image.convert("L" if grayscale else "RGB")
                    if size is not None:
                        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            except OSError as exc:                  # includes PIL.UnidentifiedImageError
                raise ValueError(f"{path}: cannot read image ({exc})") from exc
            array = np.asarray(image, dtype=np.uint8)
            if images and array.shape != images[0].shape:
                raise ValueError(f"{path}: image is {array.shape[:2]} (height, width) but "
                                 f"{paths[0]} is {images[0].shape[:2]}; pass size= to resize them")
            images.append(array)
            labels.append(label)
            paths.append(path)
    if not images:
        raise ValueError(f"{root}: no images found (expected one sub-folder of images per class)")
    stacked = np.stack(images)
    if not grayscale:
        stacked = stacked.transpose(0, 3, 1, 2).copy()
    return stacked, np.array(labels, dtype=np.int64), class_names
