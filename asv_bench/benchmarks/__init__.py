"""asv suites for fastnn. Every measurement runs on 2 threads unless the environment says otherwise.

The thread counts must be fixed before NumPy's BLAS or Numba start, hence here, before any import.
"""
import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "2")
