"""fastnn: neural networks from scratch in NumPy and Numba, PyTorch-shaped, no autograd.

Threads. A training step alternates OpenBLAS products (linear layers) with Numba's parallel
kernels (convolutions, pooling), each on its own pool of threads. By default an idle OpenBLAS
thread spins for about 2**28 cycles (a tenth of a second) waiting for more work, holding a
core the next Numba kernel needs: lenet's convolutions then run at half speed. Idle threads
that give up the core at once cost nothing measurable to the products, so
``OPENBLAS_THREAD_TIMEOUT`` defaults to 4 (2**4 cycles) here, unless it is set already.
OpenBLAS reads it when NumPy is first imported, so it takes effect only when fastnn is
imported before NumPy (as the ``fastnn`` command, the scripts and the benchmarks do); a
program that imports NumPy first should set it in its environment. (Numba's own idle threads
are told to sleep too: ``OMP_WAIT_POLICY``, see ``fastnn.kernels.jit``.)
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import kernels, losses, models, nn, optim  # noqa: E402
from .backend import use_backend  # noqa: E402

__version__ = "0.1.0"
__all__ = ["kernels", "losses", "models", "nn", "optim", "use_backend"]
