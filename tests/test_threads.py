"""fastnn's thread policy: idle OpenBLAS threads give up their core at once (see fastnn's
docstring), unless the user chose otherwise; it has to be in place before NumPy loads OpenBLAS."""
import os
import subprocess
import sys

import pytest

PROBE = ("import os, sys; import fastnn; "
         "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'numpy' in sys.modules)")


@pytest.mark.parametrize("preset, expected", [(None, "4"), ("30", "30")])
def test_openblas_idle_threads_sleep_unless_the_user_set_a_timeout(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "True"]


def test_the_benchmarks_import_fastnn_before_numpy():
    """The compare scripts and asv import ``benchmarks`` first; NumPy must not be loaded before
    fastnn has set its policy."""
    probe = ("import sys; sys.path.insert(0, 'asv_bench'); import builtins; real = builtins.__import__\n"
             "def spy(name, *a, **k):\n"
             "    if name == 'numpy' and 'fastnn' not in sys.modules: raise SystemExit('numpy before fastnn')\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = spy\n"
             "import benchmarks, benchmarks.common")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
