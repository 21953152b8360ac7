"""Numba options shared by the jit kernels, and the care of their disk cache."""
import hashlib
import os
import pathlib
import warnings

import numba

# Reordered sums and fused multiply-add only: what vectorised dot products need. No flag that
# assumes values are finite, so NaN and infinity still propagate.
FASTMATH = {"reassoc", "contract"}


def prange_only():
    """``parallel=`` options that run the explicit ``prange`` loops in parallel and nothing else.

    Numba would otherwise also turn array expressions (``np.zeros``, ``a += b``, ...) into
    parallel loops of their own: more thread synchronisation per call and longer compiles.
    (A fresh dict each time: Numba consumes the one it is given.)
    """
    return {"prange": True, "comprehension": False, "reduction": False, "inplace_binop": False,
            "setitem": False, "numpy": False, "stencil": False, "fusion": False}


def batch_chunks(N):
    """How many slices of a batch of N the parallel kernels cut it into: one per thread."""
    return min(N, numba.get_num_threads())


def _probe():
    """A function in this folder: where Numba could cache it, it can cache every jit kernel."""


def _cache_folder():
    """The folder where Numba caches this folder's kernels, or None when it has none writable."""
    from numba.core.caching import FunctionCache
    try:
        return pathlib.Path(FunctionCache(_probe)._cache_path)
    except RuntimeError:
        return None


def _disk_cache_usable():
    """True when Numba finds a writable cache directory for this folder's kernels.

    Numba looks in ``NUMBA_CACHE_DIR``, then ``__pycache__`` beside the source, then the user's
    cache directory, and with ``cache=True`` it raises at import when none is writable (a
    read-only install with no writable home, say). Asking Numba's own search once here lets the
    kernels compile without a disk cache instead, with a warning.
    """
    return _cache_folder() is not None


SOURCES_STAMP = "fastnn-jit-sources.sha256"


def _drop_stale_cache(folder):
    """Remove the cached kernels of this folder's modules when any of its sources changed.

    Numba keys a function's cache on its own file's time stamp only, not on the files of the
    functions it calls and compiles into it: ``fused.py``'s kernels inline ``conv2d.py``'s and
    ``maxpool2d.py``'s loops, and after an edit (or an upgrade) of those files they would go on
    running the old code. So a digest of every source file here is kept beside the cache, and
    when it differs, every cached kernel of this folder is removed and compiled anew on use.
    """
    sources = sorted(pathlib.Path(__file__).parent.glob("*.py"))
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest = digest.hexdigest()
    stamp = folder / SOURCES_STAMP
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    modules = {path.stem for path in sources}
    for cached in folder.glob("*.nb[ic]"):
        if cached.name.split(".")[0] in modules:
            cached.unlink(missing_ok=True)
    partial = folder / f"{SOURCES_STAMP}.{os.getpid()}.tmp"
    partial.write_text(digest)
    os.replace(partial, stamp)


CACHE = _disk_cache_usable()
if CACHE:
    _drop_stale_cache(_cache_folder())
else:
    warnings.warn("fastnn: no writable Numba cache directory (NUMBA_CACHE_DIR, the package's "
                  "__pycache__, the user cache): jit kernels are compiled anew in every process. "
                  "Set NUMBA_CACHE_DIR to a writable folder to cache them.", RuntimeWarning)
