"""The jit kernels are cached on disk: a second process loads them instead of compiling.

Two fresh interpreters share one empty NUMBA_CACHE_DIR. The first compiles every kernel
(``fastnn.kernels.jit.warm_up``) and must leave index (.nbi) and data (.nbc) files behind; the
second must load every kernel it uses from those files (Numba counts cache hits and misses per
dispatcher) and write nothing new.
"""
import json
import os
import subprocess
import sys

WARM_UP_AND_REPORT = """
import json
import numpy as np
from numba.core.registry import CPUDispatcher
import fastnn.kernels.jit as jit
from fastnn.kernels.jit import (batchnorm, conv2d, dropout, fused, linear, maxpool2d, optim, phases, relu,
                                softmax_cross_entropy, winograd)

jit.warm_up(np.float32)
stats = {}
for module in (batchnorm, conv2d, dropout, fused, linear, maxpool2d, optim, phases, relu, softmax_cross_entropy,
               winograd):
    for name, obj in vars(module).items():
        if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__:
            stats[module.__name__ + "." + name] = {
                "hits": sum(obj.stats.cache_hits.values()),
                "misses": sum(obj.stats.cache_misses.values()),
                "parallel": "parallel" in obj.targetoptions,  # (Numba empties the option's value)
            }
print(json.dumps(stats))
"""

MODULES = ("batchnorm", "conv2d", "dropout", "fused", "linear", "maxpool2d", "optim", "phases", "relu",
           "softmax_cross_entropy", "winograd")


def run_warm_up(cache_dir):
    """Per-dispatcher cache statistics of a fresh interpreter that ran warm_up."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", WARM_UP_AND_REPORT], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def cache_files(cache_dir):
    """{relative path: modification time} of every file under cache_dir."""
    return {str(p.relative_to(cache_dir)): p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}


def used(stats):
    """The dispatchers a process called, with their statistics."""
    return {name: s for name, s in stats.items() if s["hits"] + s["misses"] > 0}


def test_second_process_loads_every_kernel_from_the_disk_cache(tmp_path):
    cache_dir = tmp_path / "numba-cache"

    report = run_warm_up(cache_dir)
    # Every multi-threaded kernel is called from Python (the serial helpers are compiled into
    # their callers): warm_up must reach each one, or its compile would land in a first epoch.
    unused = [name for name, s in report.items() if s["parallel"] and s["hits"] + s["misses"] == 0]
    assert not unused, unused
    first = used(report)
    files = cache_files(cache_dir)
    assert any(name.endswith(".nbi") for name in files), files
    assert any(name.endswith(".nbc") for name in files), files
    # The directory was empty, so the first process compiled every kernel it called.
    for module in MODULES:
        assert any(name.split(".")[-2] == module for name in first), (module, first)
    assert all(s["misses"] > 0 and s["hits"] == 0 for s in first.values()), first

    second = used(run_warm_up(cache_dir))
    assert set(second) <= set(first), (first, second)
    for module in MODULES:
        assert any(name.split(".")[-2] == module for name in second), (module, second)
    assert all(s["hits"] > 0 and s["misses"] == 0 for s in second.values()), second
    assert cache_files(cache_dir) == files


COMPILE_FUSED_AND_REPORT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from kernels_copy.jit import fused
x, w, b = np.ones((1, 2, 4, 4), np.float32), np.ones((1, 2, 3, 3), np.float32), np.zeros(1, np.float32)
fused.conv2d_maxpool2d_forward(x, w, b, stride=1, pad=1, size=2, relu=True)
stats = fused._forward.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def test_an_edit_to_a_kernel_file_recompiles_the_kernels_that_inline_it(tmp_path):
    """fused.py's kernels compile conv2d.py's loops into themselves, and Numba's cache checks only
    fused.py's own time stamp: after conv2d.py changes, fused's cached kernels must not be
    loaded. A copy of the kernels package stands in for an installed one that gets edited."""
    import shutil

    import fastnn.kernels

    source = tmp_path / "src"
    shutil.copytree(os.path.dirname(fastnn.kernels.__file__), source / "kernels_copy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))

    def compile_fused():
        done = subprocess.run([sys.executable, "-c", COMPILE_FUSED_AND_REPORT, str(source)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert compile_fused()["misses"] > 0
    assert compile_fused() == {"hits": 1, "misses": 0}       # unchanged sources: loaded
    with open(source / "kernels_copy" / "jit" / "conv2d.py", "a") as f:
        f.write("\n# an edit\n")
    assert compile_fused() == {"hits": 0, "misses": 1}       # conv2d.py changed: compiled anew
