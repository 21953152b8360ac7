"""Numba options shared by the jit kernels."""
import warnings

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


def _probe():
    """A function in this folder: where Numba could cache it, it can cache every jit kernel."""


def _disk_cache_usable():
    """True when Numba finds a writable cache directory for this folder's kernels.

    Numba looks in ``NUMBA_CACHE_DIR``, then ``__pycache__`` beside the source, then the user's
    cache directory, and with ``cache=True`` it raises at import when none is writable (a
    read-only install with no writable home, say). Asking Numba's own search once here lets the
    kernels compile without a disk cache instead, with a warning.
    """
    from numba.core.caching import FunctionCache
    try:
        FunctionCache(_probe)
    except RuntimeError:
        return False
    return True


CACHE = _disk_cache_usable()
if not CACHE:
    warnings.warn("fastnn: no writable Numba cache directory (NUMBA_CACHE_DIR, the package's "
                  "__pycache__, the user cache): jit kernels are compiled anew in every process. "
                  "Set NUMBA_CACHE_DIR to a writable folder to cache them.", RuntimeWarning)
