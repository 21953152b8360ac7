"""fastnn's thread and memory defaults (see fastnn's docstring): set on import unless the user chose
otherwise, and in place before NumPy loads OpenBLAS."""
import json
import os
import subprocess
import sys

import pytest


DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "20", "OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "30000"}
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


# Four 6 MiB arrays alive at once, then freed together, step after step (as a LeNet step's
# activations are): glibc's adaptive rule hands the freed heap back to the system each time, so
# every step faults its pages in anew; with fastnn's fixed thresholds the heap is kept.
STEPS_PROBE = """
import resource, sys
if sys.argv[1] == "fastnn":
    import fastnn
import numpy as np
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(10):
    if step == 5:
        start = faults()
    arrays = [np.ones(6 << 18, np.float32) for _ in range(4)]
    del arrays
print((faults() - start) / 5)
"""


def page_faults_per_step(importing, preset=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "FASTNN_MALLOPT")}
    env.update(preset or {})
    out = subprocess.run([sys.executable, "-c", STEPS_PROBE, importing], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def glibc():
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not glibc(), reason="glibc's allocator only")
def test_importing_fastnn_keeps_freed_memory_for_the_next_step():
    if page_faults_per_step("numpy only") <= 1000:  # e.g. huge pages for the whole heap
        pytest.skip("this machine's glibc and kernel do not hand the probe's memory back")
    assert page_faults_per_step("fastnn") < 50
    # Thresholds the user set are theirs, and FASTNN_MALLOPT=0 (PyTorch's runs in compare_torch)
    # leaves the allocator alone.
    assert page_faults_per_step("fastnn", {"MALLOC_MMAP_THRESHOLD_": "131072"}) > 1000
    assert page_faults_per_step("fastnn", {"FASTNN_MALLOPT": "0"}) > 1000
