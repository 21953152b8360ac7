"""Smoke test of the benchmark code (asv_bench/ and scripts/compare_backends.py), so it cannot rot.

Every asv benchmark runs its setup and body once for each parameter combination with batch 64
(the other batch size runs the same code), on a few hundred MNIST images instead of the full
sets; compare_backends.py runs with --quick. Nothing here checks
a speed: the scripts do that. Each run happens in a child process, because the benchmark
package pins the thread counts of BLAS and Numba (which Numba refuses once its threads run).

Run as a script, this file is that child: ``python test_benchmarks_smoke.py MODULE CLASS``.
"""
import inspect
import itertools
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BATCH = 64
TRAIN_IMAGES = 2 * BATCH     # the warm-up trains on two batches
TEST_IMAGES = 200
BENCHMARK_PREFIXES = ("time_", "track_", "peakmem_")

SUITES = [
    ("bench_kernels", "Kernels"),
    ("bench_kernels", "ReferenceKernels"),
    ("bench_training", "TrainEpoch"),
    ("bench_training", "Inference"),
    ("bench_training", "ReferenceTraining"),
    pytest.param("bench_jit", "JitCompile", marks=pytest.mark.slow),   # a cold compile: ~20 s
]


def run_suite(module_name, class_name):
    """Import ``benchmarks.<module_name>`` with MNIST cut down, then run setup, every benchmark
    method and teardown once for each parameter combination with batch ``BATCH``. Returns a list of
    ``[method, params, skipped, value]`` (skipped: setup raised NotImplementedError)."""
    sys.path.insert(0, str(REPO / "asv_bench"))
    import importlib

    from benchmarks import common

    mnist = common.load_mnist()
    mnist = mnist._replace(train_images=mnist.train_images[:TRAIN_IMAGES], train_labels=mnist.train_labels[:TRAIN_IMAGES],
                           test_images=mnist.test_images[:TEST_IMAGES], test_labels=mnist.test_labels[:TEST_IMAGES])
    common.load_mnist = lambda: mnist
    module = importlib.import_module(f"benchmarks.{module_name}")
    if module_name == "bench_training":
        module.REFERENCE_IMAGES = module.REFERENCE_BATCH = 2     # the reference backend is slow
    suite = getattr(module, class_name)
    methods = [name for name, _ in inspect.getmembers(suite, inspect.isfunction)
               if name.startswith(BENCHMARK_PREFIXES)]
    combinations = list(itertools.product(*suite.params)) if hasattr(suite, "params") else [()]
    if "batch" in getattr(suite, "param_names", ()):
        batch_axis = suite.param_names.index("batch")
        combinations = [params for params in combinations if params[batch_axis] == BATCH]
    results = []
    for params in combinations:
        instance = suite()
        try:
            instance.setup(*params)
        except NotImplementedError:
            results += [[name, list(params), True, None] for name in methods]
            continue
        for name in methods:
            results.append([name, list(params), False, getattr(instance, name)(*params)])
        if hasattr(instance, "teardown"):
            instance.teardown(*params)
    return results


@pytest.mark.parametrize("module_name, class_name", SUITES)
def test_asv_suite_runs_once_per_combination(module_name, class_name, mnist_dir):
    finished = subprocess.run([sys.executable, __file__, module_name, class_name], capture_output=True,
                              text=True, env=dict(os.environ, FASTNN_DATA_DIR=str(mnist_dir)))
    assert finished.returncode == 0, finished.stderr
    results = json.loads(finished.stdout.strip().splitlines()[-1])
    assert results, f"{class_name} has no benchmark"
    for name, params, skipped, value in results:
        if skipped:
            # Only the reference backend may skip (it is too slow for full epochs).
            assert "reference" in params, (name, params)
        elif name.startswith("track_"):
            assert math.isfinite(value) and value > 0, (name, params, value)
    assert not all(skipped for _, _, skipped, _ in results), f"every combination of {class_name} was skipped"


def test_compare_backends_quick_prints_every_case_and_target():
    finished = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_backends.py"), "--quick",
                               "--batch-sizes", "64"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    first_cells = {line.split()[0] for line in out.splitlines() if line.strip()}
    for case in ("seed_cnn.conv", "lenet.conv1", "lenet.conv2", "lenet.pool1", "mlp.batchnorm",
                 "mlp.dropout", "softmax_ce"):
        assert case in first_cells, f"{case} missing from:\n{out}"
    # Four kernel targets at batch 64 and the 1000x step target, each judged.
    assert out.count("PASS") + out.count("MISS") == 2 * 4 + 1, out
    assert "student loop CNN" in out and "fastnn seed_cnn step" in out


if __name__ == "__main__":
    print(json.dumps(run_suite(sys.argv[1], sys.argv[2])))
