"""fastnn's thread defaults (see fastnn's docstring): set on import unless the user chose
otherwise, and in place before NumPy loads OpenBLAS."""
import json
import os
import subprocess
import sys


DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "20", "OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "10000"}
PROBE = ("import json, os, sys; import fastnn; "
         f"print(json.dumps([{{k: os.environ.get(k) for k in {list(DEFAULTS)}}}, 'numpy' in sys.modules]))")


def fastnn_environment(preset):
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    env.update(preset)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_thread_defaults_are_set_when_fastnn_is_imported():
    assert fastnn_environment({}) == [DEFAULTS, True]


def test_a_variable_the_user_set_is_left_alone():
    chosen = {"OPENBLAS_THREAD_TIMEOUT": "30", "OMP_WAIT_POLICY": "PASSIVE"}
    assert fastnn_environment(chosen) == [{**DEFAULTS, **chosen}, True]


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
