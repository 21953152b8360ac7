"""asv suites for fastnn, and the helpers scripts/compare_*.py share with them (``common``).

Every measurement runs on ``THREADS`` threads, as the targets in the issues are stated. The
thread counts must be fixed before NumPy's BLAS or Numba start, hence here, before any import:
the scripts import this package before NumPy for the same reason.

asv's benchmark runner imports NumPy itself (through pympler) before it imports this package,
so in an asv run OpenBLAS has already read its variables: they must be in the environment asv
starts with (asv.conf.json sets them for the environments asv builds; with --python=same the
README's command exports them). Without them OpenBLAS's idle threads spin for a tenth of a
second after every product, and the convolution epochs measured half their speed; a warning
says so.
"""
import os
import sys

THREADS = 2
OPENBLAS_VARIABLES = {"OPENBLAS_NUM_THREADS": str(THREADS), "OPENBLAS_THREAD_TIMEOUT": "20"}

if "numpy" in sys.modules and any(os.environ.get(name) != value for name, value in OPENBLAS_VARIABLES.items()):
    print("fastnn benchmarks: NumPy was imported before the thread settings could be made, so OpenBLAS "
          "runs with its defaults and the timings are not fastnn's. Run with "
          + " ".join(f"{name}={value}" for name, value in OPENBLAS_VARIABLES.items())
          + " in the environment.", file=sys.stderr)

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = str(THREADS)

# The environment without fastnn's thread defaults: what another framework is measured in. Its
# worker imports fastnn too (models, data), so fastnn's allocator setting is switched off there.
ENVIRONMENT_WITHOUT_FASTNN = dict(os.environ, FASTNN_MALLOPT="0")

import fastnn  # noqa: E402,F401  (before NumPy too: fastnn's own thread defaults, see its docstring)
