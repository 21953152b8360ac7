"""fastnn: neural networks from scratch in NumPy and Numba, PyTorch-shaped, no autograd.

Threads. A training step alternates OpenBLAS products (linear layers) with Numba's parallel
kernels (convolutions, pooling), each running on its own pool of threads, and what the idle
threads of one pool do decides how fast the other runs. fastnn sets three defaults here
(only where the variable is not set already), measured on 2 cores:

- ``OPENBLAS_THREAD_TIMEOUT=20``: an idle OpenBLAS thread spins for 2**20 cycles (a few
  tenths of a millisecond) before it sleeps, instead of OpenBLAS's 2**28 (a tenth of a second).
  Long enough to bridge the gaps between the products of one training step (waking a sleeping
  thread for each product cost mlp 15% at batch 64 with 2**4), short enough not to hold a core
  through the Numba kernels that follow (2**28 halved lenet's convolutions). seed_cnn's step
  makes no BLAS call at all (its narrow linear layer runs in Numba).
- ``OMP_WAIT_POLICY=ACTIVE`` with ``GOMP_SPINCOUNT=30000``: Numba's idle threads spin for
  about 0.3-0.4 ms before they sleep (measured here: 10000 spins last about 0.12 ms), so kernels
  a few tenths of a millisecond apart do not pay the 40-50 us wake-up of a sleeping thread,
  while a thread never spins long enough to slow an OpenBLAS product much. seed_cnn's step
  spends about 0.15 ms between its last Numba kernel and the next step's first (optimizer
  update, next batch): 10000 spins let the threads fall asleep there, and 30000 made its epochs
  5-10% faster (mlp+bn+dropout's 7% at batch 64), lenet's and mlp's the same within noise;
  60000 gained nothing more. (Always sleeping cost seed_cnn a quarter of its speed at batch 64;
  10^6 spins made it 19% faster and lenet 35% slower, its Winograd workers and OpenBLAS's
  threads meeting a spinning Numba thread.)

The jit backend's Winograd convolution (``kernels/jit/winograd.py``) has worker threads of its
own besides, and holds OpenBLAS to one thread, process-wide, while it runs.

OpenBLAS reads its variable when NumPy is first imported, so it takes effect only when fastnn
is imported before NumPy (as the ``fastnn`` command, the scripts and the benchmarks do); a
program that imports NumPy first should set it in its environment.

Memory. Each training step allocates its activations and gradients anew (LeNet at batch 256:
several arrays of 6-16 MiB), and glibc's allocator decides whether freed blocks are kept for the
next step or handed back to the system, whose fresh pages then cost a page fault each 4 KB.
Its rule adapts to the program's history: after LeNet trained and ran an inference pass at
batch 256, every later epoch took 377,000 page faults and ran 10% slower (4,250 against 4,800
images/s). So on glibc fastnn fixes what the rule would reach after freeing a 32 MiB block:
blocks under 32 MiB come from the heap, and up to 64 MiB of free heap is kept. Not where the
user set glibc's thresholds, and not with ``FASTNN_MALLOPT=0`` (``_keep_freed_memory``).
"""
import ctypes
import os

for _variable, _value in (("OPENBLAS_THREAD_TIMEOUT", "20"), ("OMP_WAIT_POLICY", "ACTIVE"),
                          ("GOMP_SPINCOUNT", "30000")):
    os.environ.setdefault(_variable, _value)


def _keep_freed_memory():
    """On glibc, mallopt(M_MMAP_THRESHOLD, 32 MiB) and mallopt(M_TRIM_THRESHOLD, 64 MiB), unless
    the user chose: thresholds in the environment (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``: glibc reads them
    itself at start-up), or ``FASTNN_MALLOPT=0`` to leave the allocator as it is."""
    environ = os.environ
    if (environ.get("FASTNN_MALLOPT") == "0" or "MALLOC_MMAP_THRESHOLD_" in environ
            or "MALLOC_TRIM_THRESHOLD_" in environ or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")):
        return
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, ValueError, OSError):  # no confstr, no such name, not glibc
        return
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


_keep_freed_memory()

from . import kernels, losses, models, nn, optim  # noqa: E402
from .backend import use_backend  # noqa: E402

__version__ = "0.1.0"
__all__ = ["kernels", "losses", "models", "nn", "optim", "use_backend"]
