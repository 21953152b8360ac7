"""asv suites for fastnn, and the helpers scripts/compare_*.py share with them (``common``).

Every measurement runs on ``THREADS`` threads, as the targets in the issues are stated. The
thread counts must be fixed before NumPy's BLAS or Numba start, hence here, before any import:
the scripts import this package before NumPy for the same reason.
"""
import os

THREADS = 2

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = str(THREADS)

# The environment without fastnn's thread defaults: what another framework is measured in.
ENVIRONMENT_WITHOUT_FASTNN = dict(os.environ)

import fastnn  # noqa: E402,F401  (before NumPy too: fastnn's own thread defaults, see its docstring)
