"""Pure compute kernels: every op's forward and backward in three backends.

Installed as ``fastnn.kernels``. Each backend is a subpackage with the same function names:

- ``reference``  -- plain Python loops over output positions: the readable specification.
- ``vectorized`` -- NumPy only (im2col by strided slices, reshape pooling, BLAS products).
- ``jit``        -- Numba ``@njit(cache=True)`` kernels, compiled at first call.

A backend may leave an op out; ``get`` then serves the op from its fallback backend
(``jit`` falls back to ``vectorized``) and ``provider`` says which backend really serves it.
"""
import importlib
from types import SimpleNamespace

BACKENDS = ("reference", "vectorized", "jit")

OPS = (
    "linear_forward", "linear_backward",
    "conv2d_forward", "conv2d_backward",
    "maxpool2d_forward", "maxpool2d_backward",
    "relu_forward", "relu_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "batchnorm_forward", "batchnorm_backward",
    "dropout_forward", "dropout_backward", "dropout_mask",     # dropout's random keep-mask
    "conv2d_maxpool2d_forward", "conv2d_maxpool2d_backward",   # fused: conv, [ReLU], max-pool
    "linear_relu_forward", "linear_relu_backward",             # fused: linear, ReLU
    "sgd_update", "adam_update",                               # optimizer steps, in place
)

FALLBACK = {"jit": "vectorized"}

_namespaces = {}


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def provider(backend, op):
    """Name of the backend whose function serves ``op`` when ``backend`` is asked for."""
    _check_backend(backend)
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {', '.join(OPS)}")
    module = importlib.import_module(f"{__name__}.{backend}")
    if hasattr(module, op):
        return backend
    if backend in FALLBACK:
        return provider(FALLBACK[backend], op)
    raise NotImplementedError(f"backend {backend!r} has no {op}")


def get(backend):
    """A namespace holding every op's function for ``backend`` (with fallbacks filled in)."""
    _check_backend(backend)
    if backend not in _namespaces:
        functions = {}
        for op in OPS:
            module = importlib.import_module(f"{__name__}.{provider(backend, op)}")
            functions[op] = getattr(module, op)
        _namespaces[backend] = SimpleNamespace(name=backend, **functions)
    return _namespaces[backend]
