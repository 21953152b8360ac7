"""Which kernel backend a layer uses.

Chosen, in order: the layer's own ``backend=``, the innermost ``use_backend(...)`` block, the
``FASTNN_BACKEND`` environment variable, then ``DEFAULT_BACKEND``.
"""
import contextlib
import os

from . import kernels

DEFAULT_BACKEND = "jit"

_active = []


@contextlib.contextmanager
def use_backend(name):
    """Run the block with ``name`` as the backend of every layer that does not name its own."""
    kernels.get(name)  # raises ValueError for an unknown name
    _active.append(name)
    try:
        yield kernels.get(name)
    finally:
        _active.pop()


def resolve(name=None):
    """The backend name in force for a layer whose own choice is ``name`` (None: no choice)."""
    if name is None:
        name = _active[-1] if _active else os.environ.get("FASTNN_BACKEND") or DEFAULT_BACKEND
    if name not in kernels.BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(kernels.BACKENDS)}")
    return name


def ops(name=None):
    """The kernel namespace (``fastnn.kernels.get``) in force for a layer whose own choice is ``name``."""
    return kernels.get(resolve(name))
