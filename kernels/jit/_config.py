"""Numba options shared by the jit kernels."""

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
